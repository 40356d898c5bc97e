"""X-Twilio-Signature: compute it, and check it in constant time against the public URL.

Twilio signs ``base64(HMAC-SHA1(auth_token, url + name1 + value1 + name2 + value2 ...))``
with POST parameters sorted by name. twilio-python's ``RequestValidator`` compares with
``==`` semantics on some paths and accepts several URL spellings; we compute the few
spellings Twilio may have used ourselves and compare each with ``hmac.compare_digest``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit, urlunsplit

from service.settings import IPNetwork

Params = Sequence[tuple[str, str]]


def compute_signature(auth_token: str, url: str, params: Params) -> str:
    """The signature Twilio sends for a POST to ``url`` with form ``params``."""
    payload = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def url_variants(url: str) -> list[str]:
    """The URL as given, and with the scheme's default port added or removed: Twilio signs
    what it requested, and a proxy may or may not show the port."""
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    variants = [url]
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is None and default_port:
        variants.append(urlunsplit(parts._replace(netloc=f"{host}:{default_port}")))
    elif parts.port == default_port:
        variants.append(urlunsplit(parts._replace(netloc=host)))
    return variants


def is_valid_signature(auth_token: str, url: str, params: Params, signature: str) -> bool:
    """Constant-time check of ``signature`` against every spelling of ``url``. Every
    variant is computed and compared, so the time taken does not depend on which one
    (if any) matched."""
    if not signature or len(signature) > 128:
        return False
    given = signature.encode("utf-8", "replace")
    matched = False
    for variant in url_variants(url):
        expected = compute_signature(auth_token, variant, params).encode("ascii")
        matched |= hmac.compare_digest(expected, given)
    return matched


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
        if proto not in ("http", "https") or not host or any(c in host for c in "/?#@ \\"):
            return None
        base = f"{proto}://{host}"
    return base + path + (f"?{query_string}" if query_string else "")


def _first(header: str | None) -> str | None:
    """The client-most value of a comma-joined forwarded header."""
    if not header:
        return None
    return header.split(",")[0].strip().lower() or None
