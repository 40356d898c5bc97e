"""The webhook's side of the backend contract: ``POST /v1/lookup`` and ``GET /healthz``.

Over aiohttp rather than httpx, by measurement: in a profile of the whole call the webhook's
httpx call to the backend was a third of the webhook's CPU (bench/RESULTS.md, "Async HTTP
client"). aiohttp's exceptions are translated here, at the boundary, into
:class:`~service.errors.BackendUnavailable`; the webhook sees only status and body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import aiohttp

from service.errors import BackendUnavailable
from service.settings import Settings
from service.web.failover import Endpoints
from service.web.outbound import client_session, proxy_for

Answer = tuple[int, bytes]
"""The backend's status and raw body."""


class BackendClient(Protocol):
    """What the webhook needs of the backend."""

    async def lookup(self, body: Mapping[str, str | bool], *, idempotency_key: str,
                     ) -> Answer:
        """The answer to one lookup; :class:`BackendUnavailable` when there is none."""
        ...

    async def healthy(self) -> bool:
        """The backend answers its liveness route."""
        ...


BackendSession = Callable[[Settings], AbstractAsyncContextManager[BackendClient]]
"""Opens the backend client for an app's lifetime (the seam unit tests fill)."""


class HttpBackend:
    """The backend replicas at ``urls`` over one keep-alive aiohttp session. Lookups take
    turns; one that gets no answer or a 5xx goes to the next replica, with the same
    Idempotency-Key, so the second replica answers what the first decided, if it did
    (service/web/failover.py; a 4xx is a decision and is returned as it is)."""

    def __init__(self, session: aiohttp.ClientSession, urls: Sequence[str]) -> None:
        self._session = session
        self._endpoints = Endpoints(urls, name="backend", spread=True)
        self._proxy = {url: proxy_for(url) for url in urls}

    async def lookup(self, body: Mapping[str, str | bool], *, idempotency_key: str,
                     ) -> Answer:
        payload = dict(body)
        answer: Answer | None = None
        failure = "no replica"
        for url in self._endpoints.order():
            try:
                async with self._session.post(f"{url}/v1/lookup", json=payload,
                                              headers={"Idempotency-Key": idempotency_key},
                                              proxy=self._proxy[url]) as response:
                    status, raw = response.status, await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._endpoints.failed(url)
                failure = type(exc).__name__
                continue
            if status < 500:
                self._endpoints.worked(url)
                return status, raw
            self._endpoints.failed(url)
            answer = status, raw
        if answer is not None:
            return answer  # a replica's 5xx: the caller hears "please call again later"
        raise BackendUnavailable(f"lookup: {failure}")

    async def healthy(self) -> bool:
        """Some replica answers its liveness route."""
        for url in self._endpoints.addresses:
            try:
                async with self._session.get(f"{url}/healthz",
                                             proxy=self._proxy[url]) as response:
                    if response.status == 200:
                        return True
            except (aiohttp.ClientError, TimeoutError):
                continue
        return False


@asynccontextmanager
async def http_backend(settings: Settings) -> AsyncIterator[BackendClient]:
    """The production :data:`BackendSession`: BACKEND_URL (one or more replicas) with the
    bearer token, every request bounded by BACKEND_TIMEOUT."""
    token = settings.backend_token
    assert token is not None  # Settings.require("webhook") checked it
    urls = settings.backend_url
    async with client_session(urls, timeout=settings.backend_timeout,
                              limit=64 * len(urls),
                              headers={"Authorization": f"Bearer {token.reveal()}"},
                              ) as session:
        yield HttpBackend(session, urls)
