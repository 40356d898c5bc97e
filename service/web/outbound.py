"""Outgoing HTTP on the event loop (Transit, the webhook's backend calls): aiohttp sessions
that read the environment once, as the blocking clients do.

aiohttp rather than httpx.AsyncClient, by measurement (bench/clients.py, bench/RESULTS.md
"Async HTTP client"): the same Transit batches cost 0.13 ms of CPU per call against
0.58 ms; in a profile of the whole call, the webhook's httpx call to the backend was a
third of the webhook's CPU. Proxies (HTTP(S)_PROXY, NO_PROXY) and the CA bundle are read
from the environment when the session is made, not on every request.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp
import requests.utils


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (none when NO_PROXY covers it)."""
    proxy: str | None = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
    return proxy


def ssl_context(verify: str | bool) -> ssl.SSLContext | bool:
    """A CA file or directory, or (True) the bundle requests and httpx use (certifi)."""
    if verify is False:
        return False
    bundle = requests.utils.DEFAULT_CA_BUNDLE_PATH if verify is True else verify
    if Path(bundle).is_dir():
        return ssl.create_default_context(capath=bundle)
    return ssl.create_default_context(cafile=bundle)


def client_session(
    urls: Sequence[str],
    *,
    timeout: float,
    limit: int,
    headers: Mapping[str, str],
    verify: str | bool = True,
) -> aiohttp.ClientSession:
    """A session for one service at ``urls`` (its replicas or nodes; each request names
    its own proxy, :func:`proxy_for`): ``timeout`` bounds every request as a whole
    (connect, send, wait, read); no cookies, no environment lookups per request. TLS is
    verified as soon as one URL is https (``ssl=False`` would turn verification off)."""
    tls = ssl_context(verify) if any(u.startswith("https:") for u in urls) else False
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ssl=tls),
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers=dict(headers),
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        raise_for_status=False,
    )
