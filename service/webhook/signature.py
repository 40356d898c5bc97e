"""X-Twilio-Signature: compute it, and check it in constant time against the public URL.

Twilio signs ``base64(HMAC-SHA1(auth_token, url + name1 + value1 + name2 + value2 ...))``.
We accept exactly what twilio-python's ``RequestValidator.validate`` accepts for a form
post (its code, twilio 9.x, is the reference; tests/unit/webhook/test_signature.py checks
the two side by side on random requests):

- each parameter name's values are signed sorted and de-duplicated, names in sorted order;
- the URL is checked as spelled by ``urlparse(url).geturl()`` in two variants: with the
  scheme's default port added when it has no port, and with any port removed (its comment:
  Twilio's own signing "is inconsistent" about ports).

Where we differ, on purpose: ``validate`` drops a port by cutting the netloc at its first
``:``, which garbles an IPv6 literal (``[::1]:8080`` → ``[``) and a ``user:pass@`` netloc;
we drop just the port. Twilio never signs the garbled spellings, and our URLs never carry
credentials. ``validate`` compares with a loop of ``==``; we compare each variant with
``hmac.compare_digest``.

The second spelling is computed only when the first does not match (the URL as it came
first: what Twilio signs when its console URL is the public one). The verdict is
``validate``'s either way: valid when either spelling matches. Why the time this takes
tells an attacker nothing: each comparison is constant-time, so no prefix of an expected
signature leaks; every refused request costs the same (both spellings computed and
compared); and the one thing the number of HMACs depends on, whether the first spelling
matched, happens only for a valid signature, whose sender chose that spelling and learns
from the answer (TwiML, not 403) that it was accepted. Sorting the form, building the HMAC
payload and parsing the URL happen once per request, shared by the check and the request
key (#21: the check and the key were 6 % of the webhook's event-loop thread under the card
step, bench/profiles/webhook-before.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from urllib.parse import ParseResult, urlparse

from service.settings import IPNetwork

Params = Sequence[tuple[str, str]]

_DEFAULT_PORTS = {"https": 443}  # any other scheme: 80, as RequestValidator does


def signed_params(params: Params) -> list[tuple[str, str]]:
    """The parameters as Twilio's signature covers them: sorted by name, then value, and
    each (name, value) pair once."""
    return sorted(set(params))


def compute_signature(auth_token: str, url: str, params: Params) -> str:
    """The signature Twilio sends for a POST to ``url`` with form ``params``."""
    return _signature(_keyed(auth_token), url, _payload(signed_params(params))).decode("ascii")


def _keyed(auth_token: str) -> hmac.HMAC:
    return hmac.new(auth_token.encode(), digestmod=hashlib.sha1)


def _payload(signed: list[tuple[str, str]]) -> bytes:
    """What the signature covers after the URL: each name and value, in signed order."""
    return "".join(name + value for name, value in signed).encode()


def _signature(keyed: hmac.HMAC, url: str, payload: bytes) -> bytes:
    mac = keyed.copy()
    mac.update(url.encode())
    mac.update(payload)
    return base64.b64encode(mac.digest())


def url_variants(url: str) -> list[str]:
    """The two spellings of ``url`` a signature may cover, the URL as it came first (as
    ``urlparse(url).geturl()`` spells it), then: with the scheme's default port added
    when it names none, or with its port removed. Raises ValueError for a port that is not
    a number from 0 to 65535 (as ``urlparse(url).port`` does)."""
    return _variants(urlparse(url))


def _variants(parts: ParseResult) -> list[str]:
    port = parts.port
    if port:  # falsy for 0 as in RequestValidator, which then adds a second port
        without = parts._replace(netloc=parts.netloc.rpartition(":")[0])
        return [parts.geturl(), without.geturl()]
    default = _DEFAULT_PORTS.get(parts.scheme, 80)
    return [parts.geturl(), parts._replace(netloc=f"{parts.netloc}:{default}").geturl()]


def is_valid_signature(auth_token: str, url: str, params: Params, signature: str) -> bool:
    """Constant-time check of ``signature`` against the spellings of ``url`` (the module's
    docstring: the second only when the first fails, and why that is safe). A URL whose
    port is not a port matches nothing."""
    return signed_request_key(auth_token, url, params, signature) is not None


def signed_request_key(auth_token: str, url: str, params: Params, signature: str) -> str | None:
    """The :func:`request_key` of a request whose ``signature`` is valid, None for any other:
    the form sorted and the URL parsed once, for both."""
    if not signature or len(signature) > 128:
        return None
    try:
        parts = urlparse(url)
        variants = _variants(parts)
    except ValueError:
        return None
    given = signature.encode("utf-8", "replace")
    signed = signed_params(params)
    keyed, payload = _keyed(auth_token), _payload(signed)
    for variant in variants:
        if hmac.compare_digest(_signature(keyed, variant, payload), given):
            return _request_key(parts, signed)
    return None


def canonical_url(url: str) -> str:
    """``url`` in the one spelling the request key uses: scheme and host in lower case, no
    port. The signature holds for the URL with or without its port, so a key that kept
    the port let one captured request be replayed as ``Host: ivr.test:1`` ... ``:9`` and
    count ten times (docs/security.md, "port-shifted replays")."""
    return _canonical(urlparse(url))


def _canonical(parts: ParseResult) -> str:
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal: hostname drops its brackets
        host = f"[{host}]"
    return parts._replace(scheme=parts.scheme.lower(), netloc=host).geturl()


def request_key(url: str, params: Params) -> str:
    """A key for "this very request", made only of what Twilio signed: SHA-256 over the
    URL in its canonical spelling and the signed parameters. A Twilio retry sends the same
    and gets the same key; any other request (another step, another entry, a replay with
    fresh unsigned headers or another port in ``Host``) cannot choose it. The signature
    itself is left out: it differs between the URL's port spellings, the request doesn't;
    so is which spelling matched."""
    return _request_key(urlparse(url), signed_params(params))


def _request_key(parts: ParseResult, signed: list[tuple[str, str]]) -> str:
    canonical = json.dumps([_canonical(parts), signed], ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


LOOKUP_KEY = re.compile(r"[0-9a-f]{64}")


def lookup_key(auth_token: str, key: str) -> str:
    """The backend's Idempotency-Key for the request whose :func:`request_key` is ``key``:
    that key under HMAC-SHA256 with the auth token. ``key`` is a plain hash of what Twilio
    signed, the caller's PIN among it, so a PIN would be one of 10,000 guesses away from
    it; keyed, it can ride in a signed action URL (the PIN step sent round again to
    another webhook: service/webhook/app.py) and sit in ``call_answers`` revealing
    nothing. Every webhook has the token, so each computes the same key for the same
    request, and Twilio's own retries keep it."""
    return hmac.new(auth_token.encode(), f"lookup:{key}".encode(), hashlib.sha256).hexdigest()


def is_trusted_proxy(client_host: str | None, trusted: Iterable[IPNetwork]) -> bool:
    if not client_host:
        return False
    try:
        address = ipaddress.ip_address(client_host)
    except ValueError:
        return False
    return any(address in network for network in trusted)


def public_url(
    *,
    public_base_url: str,
    trusted_proxies: Sequence[IPNetwork],
    client_host: str | None,
    scheme: str,
    host_header: str | None,
    forwarded_proto: str | None,
    forwarded_host: str | None,
    path: str,
    query_string: str,
) -> str | None:
    """The URL Twilio called. A fixed ``PUBLIC_BASE_URL`` wins; otherwise X-Forwarded-*
    is honoured only from a trusted proxy, and the Host header is the last resort. None
    when no URL can be trusted (the request is then refused)."""
    if public_base_url:
        base = public_base_url
    else:
        proto, host = scheme, host_header
        if is_trusted_proxy(client_host, trusted_proxies):
            proto = _first(forwarded_proto) or proto
            host = _first(forwarded_host) or host
        if proto not in ("http", "https") or not host or not _is_host(host):
            return None
        base = f"{proto}://{host}"
    return base + path + (f"?{query_string}" if query_string else "")


# A Host (or X-Forwarded-Host) value: a name or an IPv4 address, or an IPv6 literal in
# brackets, then an optional port of 1 to 5 digits (its range is checked apart). Anything
# else could reshape the URL (``/``, ``?``, ``#``, ``@``) or make it unparseable.
_HOST = re.compile(r"(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?")


def _is_host(host: str) -> bool:
    match = _HOST.fullmatch(host)
    return match is not None and (match[1] is None or int(match[1]) <= 65535)


def _first(header: str | None) -> str | None:
    """The client-most value of a comma-joined forwarded header."""
    if not header:
        return None
    return header.split(",")[0].strip().lower() or None
