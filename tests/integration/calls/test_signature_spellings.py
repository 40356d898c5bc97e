"""The two signature spellings the review found refused (403) though twilio-python's
``RequestValidator.validate`` accepts them, on a real webhook process:

- a signature computed over the URL without its port (Twilio's own signing "is
  inconsistent" about ports, says twilio-python; it strips any port);
- a repeated parameter signed as twilio-python signs it: each name's values sorted and
  de-duplicated.

Signatures here come from twilio-python itself (``RequestValidator.compute_signature``).
The refusals that stay, on purpose: a repeated ``Digits``, ``CallSid`` or ``card`` is
ambiguous, however well signed (a re-prompt, a calm goodbye, "session expired").
The differential test of every other spelling: tests/unit/webhook/test_signature.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from service.devtools.caller import new_call_sid
from service.webhook import twiml as texts
from tests.support.attack import (
    base_params,
    gather_action,
    hangs_up,
    pin_url,
    reference_signature,
    signed_post,
    spoken,
    twiml,
)
from tests.support.demo import FOUND
from tests.support.stack import Stack


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20) as c:
        yield c


def without_port(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.hostname or "").geturl()


def post(
    client: httpx.Client,
    stack: Stack,
    url: str,
    pairs: list[tuple[str, str]],
    *,
    sign_url: str | None = None,
) -> httpx.Response:
    """POST ``pairs`` to ``url`` with twilio-python's signature of ``sign_url``."""
    signature = reference_signature(stack.twilio_token, sign_url or url, pairs)
    return signed_post(
        client, stack.twilio_token, url, pairs, headers={"X-Twilio-Signature": signature}
    )


def test_a_signature_over_the_url_without_its_port_is_accepted(
    stack: Stack, client: httpx.Client
) -> None:
    """The webhook listens on http://127.0.0.1:PORT; Twilio signed http://127.0.0.1/..."""
    assert urlsplit(stack.webhook.url).port  # a non-default port, part of PUBLIC_BASE_URL
    call_sid = new_call_sid()
    card_url = stack.webhook.url + "/voice/card?registered=1"
    pairs = [*base_params(call_sid), ("Digits", "1234")]
    root = twiml(post(client, stack, card_url, pairs, sign_url=without_port(card_url)))
    assert spoken(root) == texts.ASK_PIN
    action = gather_action(root)
    assert action is not None
    pin = stack.webhook.url + action
    root = twiml(
        post(
            client,
            stack,
            pin,
            [*base_params(call_sid), ("Digits", "4321")],
            sign_url=without_port(pin),
        )
    )
    assert spoken(root) == FOUND


def test_a_signature_over_another_port_is_still_refused(stack: Stack, client: httpx.Client) -> None:
    url = stack.webhook.url + "/voice/card?registered=1"
    port = urlsplit(url).port
    assert port is not None
    other = urlsplit(url)._replace(netloc=f"127.0.0.1:{port + 1}").geturl()
    response = post(client, stack, url, [*base_params(), ("Digits", "1234")], sign_url=other)
    assert (response.status_code, response.content) == (403, b"")


def test_a_repeated_parameter_signed_sorted_and_once_is_accepted(
    stack: Stack, client: httpx.Client
) -> None:
    """Twilio sends some parameters more than once on some calls; twilio-python signs
    each name's values sorted and de-duplicated, so the signature covers ``b`` once."""
    pairs = [*base_params(), ("Digits", "1234"), ("Extra", "b"), ("Extra", "a"), ("Extra", "b")]
    root = twiml(post(client, stack, stack.webhook.url + "/voice/card?registered=1", pairs))
    assert spoken(root) == texts.ASK_PIN


def test_repeated_digits_call_sid_or_card_stay_refused_however_signed(
    stack: Stack, client: httpx.Client
) -> None:
    card_url = stack.webhook.url + "/voice/card?registered=1"
    digits = post(client, stack, card_url, [*base_params(), ("Digits", "1234"), ("Digits", "5678")])
    assert gather_action(twiml(digits)) == "/voice/card?registered=1&attempt=2"  # not an entry
    call_sids = post(
        client, stack, card_url, [*base_params(), ("CallSid", new_call_sid()), ("Digits", "1234")]
    )
    assert hangs_up(twiml(call_sids)) and spoken(twiml(call_sids)) == texts.TRY_LATER
    call_sid = new_call_sid()
    pin = pin_url(client, stack.twilio_token, stack.webhook.url, call_sid, "1234")
    card = dict(httpx.QueryParams(urlsplit(pin).query))["card"]
    twice = pin + "&" + str(httpx.QueryParams({"card": card}))
    root = twiml(post(client, stack, twice, [*base_params(call_sid), ("Digits", "4321")]))
    assert hangs_up(root) and spoken(root) == texts.CALL_AGAIN
