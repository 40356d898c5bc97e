"""Helpers shared by the attack tests: sign and send webhook requests exactly as Twilio
would, then bend one thing at a time."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from urllib.parse import urlencode

import httpx

from service.devtools.caller import new_call_sid
from service.webhook.signature import compute_signature

Pairs = Sequence[tuple[str, str]]


def base_params(call_sid: str | None = None) -> list[tuple[str, str]]:
    return [("CallSid", call_sid or new_call_sid()), ("AccountSid", "AC" + "0" * 32),
            ("From", "+15005550006"), ("To", "+15005550001"), ("CallStatus", "in-progress")]


def signed_post(client: httpx.Client, token: str, url: str, pairs: Pairs, *,
                sign_url: str | None = None, sign_pairs: Pairs | None = None,
                headers: dict[str, str] | None = None) -> httpx.Response:
    """POST ``pairs`` to ``url``, signed for ``sign_url``/``sign_pairs`` (default: the
    same), so a test can sign one request and send another."""
    signature = compute_signature(token, sign_url or url,
                                  list(pairs if sign_pairs is None else sign_pairs))
    return client.post(url, content=urlencode(list(pairs)).encode(),
                       headers={"Content-Type": "application/x-www-form-urlencoded",
                                "X-Twilio-Signature": signature, **(headers or {})})


def twiml(response: httpx.Response) -> ET.Element:
    """The TwiML document of a 200 answer; fails the test for anything else."""
    assert response.status_code == 200, (response.status_code, response.text[:200])
    assert response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.text)
    assert root.tag == "Response"
    return root


def spoken(root: ET.Element) -> str:
    return " ".join(el.text or "" for el in root.iter("Say"))


def gather_action(root: ET.Element) -> str | None:
    gather = root.find("Gather")
    return None if gather is None else gather.attrib["action"]


def hangs_up(root: ET.Element) -> bool:
    return root.find("Hangup") is not None and root.find("Gather") is None
