"""What a service process holds for its lifetime, opened and closed in one place.

Both apps' lifespans and the provisioning CLI use :func:`transit_session`: a Vault login
made before the first request, a thread pool for the blocking client, a batching Transit
client, and on the way out the queued work flushed and the token revoked.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import structlog

from service.errors import VaultError
from service.settings import Settings
from service.vault.client import VaultClient
from service.vault.transit import Transit
from service.web.metrics import Metrics

log = structlog.get_logger("ivr.lifespan")

# What an app's lifespan opens to get its Transit: :func:`transit_session`, or a test's fake.
TransitSession = Callable[[Settings, Metrics], AbstractAsyncContextManager[Transit]]


# The blocking clients' threads (Vault, and the backend's store work on the same pool).
THREADS = 16


@asynccontextmanager
async def transit_session(
    settings: Settings,
    metrics: Metrics,
    *,
    threads: int = THREADS,
    vault: VaultClient | None = None,
) -> AsyncIterator[Transit]:
    vault = vault or VaultClient.from_settings(settings, pool_size=threads)
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vault")
    transit = Transit(
        vault,
        mount=settings.transit_mount,
        dtmf_key=settings.dtmf_key,
        lookup_key=settings.lookup_key,
        executor=executor,
        metrics=metrics,
        linger=settings.transit_linger,
    )
    loop = asyncio.get_running_loop()
    try:
        # Log in now so the first caller does not pay for it. If Vault is away or refuses
        # us, /readyz says so and every request tries again.
        await loop.run_in_executor(executor, vault.ensure_login)
    except VaultError as exc:
        log.warning("vault not ready at start-up; will retry per request", kind=exc.kind)
    try:
        yield transit
    finally:
        await transit.aclose()
        await loop.run_in_executor(executor, vault.revoke_self)
        executor.shutdown(wait=False, cancel_futures=True)
        vault.close()


def freeze_startup_heap() -> None:
    """Everything built at start-up (imports, clients) lives as long as the process: keep it
    out of the collector's full passes, each ~12 ms of a stalled event loop (p99)."""
    gc.collect()
    gc.freeze()
