"""The webhook's side of the backend contract: ``POST /v1/lookup`` and ``GET /healthz``.

Over aiohttp rather than httpx, by measurement: in a profile of the whole call the webhook's
httpx call to the backend was a third of the webhook's CPU (bench/RESULTS.md, "Async HTTP
client"). aiohttp's exceptions are translated here, at the boundary, into
:class:`~service.errors.BackendUnavailable`; the webhook sees only status and body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import aiohttp

from service.errors import BackendUnavailable
from service.settings import Settings
from service.web.outbound import client_session, proxy_for

Answer = tuple[int, bytes]
"""The backend's status and raw body."""


class BackendClient(Protocol):
    """What the webhook needs of the backend."""

    async def lookup(self, body: Mapping[str, str], *, idempotency_key: str) -> Answer:
        """The answer to one lookup; :class:`BackendUnavailable` when there is none."""
        ...

    async def healthy(self) -> bool:
        """The backend answers its liveness route."""
        ...


BackendSession = Callable[[Settings], AbstractAsyncContextManager[BackendClient]]
"""Opens the backend client for an app's lifetime (the seam unit tests fill)."""


class HttpBackend:
    """The backend at ``url`` over one keep-alive aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self._url = url

    async def lookup(self, body: Mapping[str, str], *, idempotency_key: str) -> Answer:
        try:
            async with self._session.post(f"{self._url}/v1/lookup", json=dict(body),
                                          headers={"Idempotency-Key": idempotency_key},
                                          ) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendUnavailable(f"lookup: {type(exc).__name__}") from None

    async def healthy(self) -> bool:
        try:
            async with self._session.get(f"{self._url}/healthz") as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


@asynccontextmanager
async def http_backend(settings: Settings) -> AsyncIterator[BackendClient]:
    """The production :data:`BackendSession`: BACKEND_URL with the bearer token, every
    request bounded by BACKEND_TIMEOUT."""
    token = settings.backend_token
    assert token is not None  # Settings.require("webhook") checked it
    async with client_session(settings.backend_url, timeout=settings.backend_timeout,
                              limit=64, proxy=proxy_for(settings.backend_url),
                              headers={"Authorization": f"Bearer {token.reveal()}"},
                              ) as session:
        yield HttpBackend(session, settings.backend_url)
