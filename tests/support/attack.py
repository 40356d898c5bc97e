"""Helpers shared by the attack tests: sign and send webhook requests exactly as Twilio
would, then bend one thing at a time."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator, Sequence
from urllib.parse import urlencode, urljoin

import httpx
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator

from service.backend.enrolment import DEMO_ACCOUNT_NUMBER
from service.devtools.caller import new_call_sid
from service.webhook.signature import compute_signature

Pairs = Sequence[tuple[str, str]]

CALLER = "+15005550006"  # Twilio's test number, the default ``From``
# What the caller hears when the demo account (card 1234, PIN 4321) is found.


def base_params(call_sid: str | None = None, caller: str = CALLER) -> list[tuple[str, str]]:
    return [
        ("CallSid", call_sid or new_call_sid()),
        ("AccountSid", "AC" + "0" * 32),
        ("From", caller),
        ("To", "+15005550001"),
        ("CallStatus", "in-progress"),
    ]


class MultiDict:
    """The interface twilio-python's RequestValidator reads repeated form fields through
    (``getall``, as Flask's and aiohttp's multidicts have): iteration yields names, repeats
    included."""

    def __init__(self, pairs: Pairs) -> None:
        self.pairs = list(pairs)

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, _ in self.pairs])

    def __len__(self) -> int:
        return len(self.pairs)

    def getall(self, name: str) -> list[str]:
        return [value for n, value in self.pairs if n == name]


def reference_signature(token: str, url: str, pairs: Pairs) -> str:
    """The signature as twilio-python computes it: Twilio's own reference."""
    return str(RequestValidator(token).compute_signature(url, MultiDict(pairs)))


def signed_post(
    client: httpx.Client,
    token: str,
    url: str,
    pairs: Pairs,
    *,
    sign_url: str | None = None,
    sign_pairs: Pairs | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST ``pairs`` to ``url``, signed for ``sign_url``/``sign_pairs`` (default: the
    same), so a test can sign one request and send another."""
    signature = compute_signature(
        token, sign_url or url, list(pairs if sign_pairs is None else sign_pairs)
    )
    return client.post(
        url,
        content=urlencode(list(pairs)).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
            **(headers or {}),
        },
    )


def twiml(response: httpx.Response) -> ET.Element:
    """The TwiML document of a 200 answer; fails the test for anything else."""
    assert response.status_code == 200, (response.status_code, response.text[:200])
    assert response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.text)
    assert root.tag == "Response"
    return root


def spoken(root: ET.Element) -> str:
    return " ".join("".join(el.itertext()) for el in root.iter("Say"))


def gather_action(root: ET.Element) -> str | None:
    gather = root.find("Gather")
    return None if gather is None else gather.attrib["action"]


def hangs_up(root: ET.Element) -> bool:
    return root.find("Hangup") is not None and root.find("Gather") is None


# -- whole calls, as Twilio plays them ------------------------------------------------------


def pin_url(
    client: httpx.Client,
    token: str,
    webhook_url: str,
    call_sid: str,
    card: str,
    caller: str = CALLER,
    number: str = DEMO_ACCOUNT_NUMBER,
) -> str:
    """Type the account number, then the card; the absolute URL of the PIN step the
    webhook asks Twilio to post."""
    url = webhook_url + "/voice/account"
    for digits in (number, card):
        root = twiml(
            signed_post(client, token, url, [*base_params(call_sid, caller), ("Digits", digits)])
        )
        action = gather_action(root)
        assert action is not None, spoken(root)
        url = urljoin(url, action)
    return url


def place_call(
    client: httpx.Client,
    token: str,
    webhook_url: str,
    card: str,
    pin: str,
    caller: str = CALLER,
    number: str = DEMO_ACCOUNT_NUMBER,
) -> str:
    """A whole call from ``caller`` (a new CallSid) that types ``number``: what the caller
    hears at the end."""
    call_sid = new_call_sid()
    url = pin_url(client, token, webhook_url, call_sid, card, caller, number)
    return spoken(
        twiml(signed_post(client, token, url, [*base_params(call_sid, caller), ("Digits", pin)]))
    )


def pin_outcomes(webhook_url: str) -> Counter[str]:
    """The webhook's ``ivr_requests_total`` for ``/voice/pin``, by outcome: what each PIN
    step came to (``not_found`` is a PIN compared and wrong, ``locked`` one never
    compared, ``caller_cut_off`` no lookup at all ...)."""
    counts: Counter[str] = Counter()
    text = httpx.get(webhook_url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ivr_requests_total" and sample.labels["route"] == "/voice/pin":
                counts[sample.labels["outcome"]] += int(sample.value)
    return counts
