"""The webhook's side of the backend contract: ``POST /v1/lookup`` and ``GET /healthz``.

Over aiohttp rather than httpx, by measurement: in a profile of the whole call the webhook's
httpx call to the backend was a third of the webhook's CPU (bench/RESULTS.md, "Async HTTP
client"). aiohttp's exceptions are translated here, at the boundary, into
:class:`~service.errors.BackendUnavailable`; the webhook sees only status and body.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import aiohttp

from service.errors import BackendUnavailable
from service.settings import Settings
from service.web import budget
from service.web.failover import Endpoints
from service.web.outbound import client_session, proxy_for

Answer = tuple[int, bytes]
"""The backend's status and raw body."""

# A liveness probe of one replica, for /readyz (2 s in all): every replica is asked at
# once and the first to answer decides, so that a silent one (paused, cut off) does not
# make every webhook unready while the other answers. Before this, one backend SIGSTOPped
# on make run-ha made /readyz of both webhooks time out, Caddy took both out, and 82 % of
# calls heard Caddy's 503 (tests/integration/ha/test_ha_drills.py, the paused backend).
PROBE_TIMEOUT_S = 1.0


class BackendClient(Protocol):
    """What the webhook needs of the backend."""

    async def lookup(
        self,
        body: Mapping[str, str | bool],
        *,
        idempotency_key: str,
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
    (service/web/failover.py; a 4xx is a decision and is returned as it is).

    Within a request's budget (:mod:`service.web.budget`) each replica still to be tried
    gets an equal share of what is left (at most BACKEND_TIMEOUT), and is told its share
    (:data:`service.web.budget.HEADER`), so that a silent replica leaves the next one time
    to answer, and the backend stops working on a lookup nobody waits for."""

    def __init__(
        self, session: aiohttp.ClientSession, urls: Sequence[str], *, timeout: float
    ) -> None:
        self._session = session
        self._timeout = timeout
        self._endpoints = Endpoints(urls, name="backend", spread=True)
        self._proxy = {url: proxy_for(url) for url in urls}

    async def lookup(
        self,
        body: Mapping[str, str | bool],
        *,
        idempotency_key: str,
    ) -> Answer:
        payload = dict(body)
        answer: Answer | None = None
        failure = "no replica"
        order = self._endpoints.order()
        for tried, url in enumerate(order):
            left = budget.left()
            share = (
                self._timeout if left is None else min(self._timeout, left / (len(order) - tried))
            )
            if share <= 0:
                failure = "request budget spent"
                break
            try:
                async with self._session.post(
                    f"{url}/v1/lookup",
                    json=payload,
                    proxy=self._proxy[url],
                    timeout=aiohttp.ClientTimeout(total=share),
                    headers={"Idempotency-Key": idempotency_key, budget.HEADER: f"{share:.3f}"},
                ) as response:
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
        """Some replica answers its liveness route (all asked at once, the first yes
        decides)."""
        probes = [asyncio.ensure_future(self._alive(url)) for url in self._endpoints.addresses]
        try:
            for probe in asyncio.as_completed(probes):
                if await probe:
                    return True
            return False
        finally:
            for probe in probes:
                probe.cancel()

    async def _alive(self, url: str) -> bool:
        try:
            async with self._session.get(
                f"{url}/healthz",
                proxy=self._proxy[url],
                timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S),
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


@asynccontextmanager
async def http_backend(settings: Settings) -> AsyncIterator[BackendClient]:
    """The production :data:`BackendSession`: BACKEND_URL (one or more replicas) with the
    bearer token, every request bounded by BACKEND_TIMEOUT."""
    token = settings.backend_token
    assert token is not None  # Settings.require("webhook") checked it
    urls = settings.backend_url
    async with client_session(
        urls,
        timeout=settings.backend_timeout,
        limit=64 * len(urls),
        headers={"Authorization": f"Bearer {token.reveal()}"},
    ) as session:
        yield HttpBackend(session, urls, timeout=settings.backend_timeout)
