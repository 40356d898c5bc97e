"""Transit's hot path on the event loop: Vault API calls over aiohttp, no thread hop.

Chosen by measurement (``bench/clients.py``, bench/RESULTS.md "Async HTTP client"): the
same Transit encrypt batches, both clients side by side in one run on uvloop, cost 0.13 ms
of CPU per call with aiohttp against 0.58 ms with httpx.AsyncClient (and ~0.6 ms with the
blocking hvac/requests client, before its thread-pool hop), at 2.4x the calls per second.
(See :mod:`service.web.outbound`.)

The blocking :class:`~service.vault.client.VaultClient` stays the owner of the identity:
it logs in and renews, in a thread pool, only when that is due. This client shares its
``target`` (nodes, timeout, CA bundle, proxies), ``endpoints`` (which node works) and
``tokens`` (the one token), and the rules of :mod:`service.vault.base` (fail-over, the
status -> error table, body parsing): one behaviour and one error tree whichever client
made the call. Only sending is its own.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import Executor
from typing import Any

import aiohttp

from service.errors import VaultPermissionDenied, VaultUnavailable
from service.vault.base import JSON, TokenState, error_for_status, fails_over, no_answer, parse_body
from service.vault.client import VaultClient
from service.web import budget
from service.web.outbound import client_session


def _share(timeout: float, order: list[str], tried: int) -> aiohttp.ClientTimeout:
    """Within a request's budget (service/web/budget.py), each node still to be tried
    gets an equal share of what is left, at most VAULT_TIMEOUT: a silent node (a paused
    or cut-off leader) then leaves the next one time to answer. With VAULT_TIMEOUT alone
    (2 s of the webhook's 2.5), a call in flight when the leader froze was lost: 2 to 4
    calls per 10 s pause on make run-ha (tests/integration/ha/test_ha_drills.py)."""
    left = budget.left()
    if left is not None:
        timeout = min(timeout, max(0.05, left / (len(order) - tried + 1)))
    return aiohttp.ClientTimeout(total=timeout)


class AsyncVault:
    """Vault API calls for one identity, on the running event loop.

    One aiohttp session per event loop (a session and its connections belong to the loop
    that made them; tests run one Transit under several ``asyncio.run``). ``aclose()`` on
    the way out.
    """

    def __init__(self, vault: VaultClient, *, executor: Executor, pool_size: int = 32) -> None:
        self._vault = vault
        self._executor = executor
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # One login/renewal at a time, shared by every caller that needs it.
        self._refresh: asyncio.Future[None] | None = None

    async def write(self, path: str, operation: str, payload: dict[str, Any]) -> JSON:
        """POST ``payload`` to ``/v1/<path>`` with a valid token. A 403 right after the
        token died on the server (revoked, clock skew) gets one fresh login and one retry;
        a second 403 is a real denial and is raised, as VaultClient.request does."""
        data = json.dumps(payload).encode()
        for attempt in (1, 2):
            state = await self._token()
            try:
                return await self._post(path, operation, data, state)
            except VaultPermissionDenied:
                if not self._vault.tokens.retry_after_denial(state, attempt):
                    raise
                await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._vault.ensure_login
                )
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._loop is asyncio.get_running_loop():
            await session.close()

    # -- token ----------------------------------------------------------------------------

    async def _token(self) -> TokenState:
        state, due = self._vault.tokens.peek()
        if state is not None and not due:
            return state  # the hot path: no lock, no thread
        refresh = self._refresh
        if refresh is None or refresh.get_loop() is not asyncio.get_running_loop():
            loop = asyncio.get_running_loop()
            refresh = asyncio.ensure_future(
                loop.run_in_executor(self._executor, self._vault.ensure_login)
            )
            self._refresh = refresh
            refresh.add_done_callback(self._refresh_done)
        if state is not None:
            return state  # still valid: renew in the background, answer now
        await asyncio.shield(refresh)
        state, _ = self._vault.tokens.peek()
        if state is None:
            raise VaultUnavailable("vault login: no valid token")
        return state

    def _refresh_done(self, refresh: asyncio.Future[None]) -> None:
        if self._refresh is refresh:
            self._refresh = None
        # A background renewal that failed is retried by the next call that finds it due;
        # a caller that waited for it got the error. Either way it is not "never retrieved".
        if not refresh.cancelled():
            refresh.exception()

    # -- HTTP -----------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop:
            if self._session is not None:
                # Its loop is gone (closed, or no longer running us), and its connections
                # belong to it: leave them, so the session is not reported as unclosed.
                self._session.detach()
            self._loop = loop
            # The environment (CA bundle; proxies per node, below) as VaultClient read it.
            target = self._vault.target
            self._session = client_session(
                target.addresses,
                timeout=target.timeout,
                limit=self._pool_size,
                verify=target.verify,
                headers={"X-Vault-Request": "true", "Content-Type": "application/json"},
            )
        return self._session

    async def _post(self, path: str, operation: str, data: bytes, state: TokenState) -> JSON:
        """One call, on the node that last worked, failing over to the next on no answer
        or an answer that :func:`~service.vault.base.fails_over`, each node once, as
        VaultClient does (service/web/failover.py). A 4xx is the cluster's answer."""
        headers = {"X-Vault-Token": state.token.reveal()}
        endpoints, proxies = self._vault.endpoints, self._vault.target.proxies
        order = endpoints.order()
        for tried, addr in enumerate(order, start=1):
            last = tried == len(order)
            try:
                async with self._client().post(
                    f"{addr}/v1/{path}",
                    data=data,
                    headers=headers,
                    timeout=_share(self._vault.target.timeout, order, tried),
                    proxy=proxies[addr],
                ) as response:
                    status = response.status
                    body = await response.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                # (aiohttp's own timeout errors subclass TimeoutError too)
                endpoints.failed(addr)
                if last:
                    raise no_answer(
                        operation, timed_out=isinstance(exc, TimeoutError), addr=addr
                    ) from None
                continue
            if not fails_over(status):
                endpoints.worked(addr)
                return parse_body(status, body, operation, addr)
            endpoints.failed(addr)
            if last:
                raise error_for_status(status, operation, body, addr)
        raise AssertionError("unreachable")
