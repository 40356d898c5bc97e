"""Turning an HTTP request into a verified Twilio webhook, or refusing it.

Everything here runs before any caller data is trusted: content type, form parsing,
repeated parameters, the public URL, and the signature (constant time).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import Request

from service.errors import WebhookRefused
from service.formats import ANONYMOUS_CALLER, CALL_SID, caller_bucket, is_digits
from service.settings import Settings
from service.step_time import issued_is_fresh
from service.web.media_type import media_type
from service.webhook.signature import public_url, signed_request_key

_MAX_FIELDS = 64


@dataclass(frozen=True)
class TwilioForm:
    """The verified parameters of one webhook. ``duplicated`` names parameters that were
    sent more than once: Twilio never does, so those are treated as invalid input."""

    params: dict[str, str]
    query: dict[str, str]
    duplicated: frozenset[str]
    # What Twilio signed, hashed (signature.request_key): the same for Twilio's own retries,
    # and for nothing else. The backend's Idempotency-Key; never an unsigned header.
    request_key: str

    @property
    def call_sid(self) -> str | None:
        sid = self.params.get("CallSid", "")
        return sid if CALL_SID.fullmatch(sid) and "CallSid" not in self.duplicated else None

    def digits(self, count: int) -> str | None:
        """The caller's entry if it is exactly ``count`` ASCII digits, else None."""
        if "Digits" in self.duplicated:
            return None
        value = self.params.get("Digits", "")
        return value if is_digits(value, count) else None

    def pressed_only(self, key: str) -> bool:
        """The caller ended the gather with ``key`` before any digit (Twilio posts an empty
        ``Digits`` and ``FinishedOnKey``, as Twilio documents)."""
        if {"Digits", "FinishedOnKey"} & self.duplicated:
            return False
        return self.params.get("Digits", "") == "" and self.params.get("FinishedOnKey") == key

    @property
    def stir_verstat(self) -> str | None:
        """Twilio's STIR/SHAKEN verification result of the caller ID, as signed; None when
        absent, repeated or not shaped like one."""
        value = self.params.get("StirVerstat")
        if value is None or "StirVerstat" in self.duplicated:
            return None
        ok = 0 < len(value) <= 64 and value.isascii() and value.replace("-", "").isalnum()
        return value if ok else None

    @property
    def caller(self) -> str:
        """The caller's bucket for failure counting (``From``, validated); a repeated
        ``From`` is ambiguous and counts as withheld."""
        if "From" in self.duplicated:
            return ANONYMOUS_CALLER
        return caller_bucket(self.params.get("From", ""))

    def step_is_fresh(self, now: float, max_age: float) -> bool:
        """Whether the step's signed issue time (``issued`` in the action URL) is at most
        ``max_age`` old. Missing, repeated or garbled: not fresh."""
        if "?issued" in self.duplicated:
            return False
        return issued_is_fresh(self.query.get("issued"), now, max_age)


def _parse_pairs(raw: bytes) -> list[tuple[str, str]]:
    try:
        text = raw.decode("ascii") if raw.isascii() else raw.decode("utf-8")
        return parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=_MAX_FIELDS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError):
        raise WebhookRefused(400, "malformed form") from None


def _single(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], frozenset[str]]:
    seen: dict[str, str] = {}
    dup: set[str] = set()
    for name, value in pairs:
        if name in seen:
            dup.add(name)
        seen[name] = value
    return seen, frozenset(dup)


async def verified_form(request: Request, settings: Settings) -> TwilioForm:
    """Parse and verify; raises :class:`WebhookRefused` for anything Twilio would not
    send."""
    if media_type(request) != "application/x-www-form-urlencoded":
        raise WebhookRefused(415, "content type")
    body = await request.body()
    pairs = _parse_pairs(body)
    raw_query = request.scope.get("query_string", b"")
    query_pairs = _parse_pairs(raw_query)

    scope = request.scope
    url = public_url(
        public_base_url=settings.public_base_url,
        trusted_proxies=settings.trusted_proxies,
        client_host=request.client.host if request.client else None,
        scheme=scope.get("scheme", "http"),
        host_header=request.headers.get("host"),
        forwarded_proto=request.headers.get("x-forwarded-proto"),
        forwarded_host=request.headers.get("x-forwarded-host"),
        path=_url_path(scope["path"]),
        query_string=raw_query.decode("latin-1"),
    )
    token = settings.twilio_auth_token
    signature = request.headers.get("x-twilio-signature", "")
    key = (
        None
        if url is None or token is None
        else signed_request_key(token.reveal(), url, pairs, signature)
    )
    if key is None:
        raise WebhookRefused(403, "signature")

    params, duplicated = _single(pairs)
    query, query_dup = _single(query_pairs)
    return TwilioForm(params, query, duplicated | {f"?{q}" for q in query_dup}, key)


def _url_path(path: str) -> str:
    """The ASGI path as Starlette's ``request.url.path`` spells it, without building the
    whole URL object (2 % of the webhook's event-loop thread under the card step)."""
    return path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
