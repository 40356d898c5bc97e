"""PostgreSQL goes away under a running backend, and comes back: the real processes (the
session's Vault, a backend and webhook on this module's own PostgreSQL, which is stopped
and started again on the same port with the same data).

While it is away the caller hears the calm "try later" within the webhook's budget and
the backend's /readyz says ``{"store": false}``; nothing is decided, so nothing is lost.
Once it is back, the next call is served: the pool replaces the connections that died
(``check_connection``) instead of failing the requests that drew them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.devtools.postgres import LocalPostgres
from service.settings import Settings
from service.store.migrations import migrate_store
from service.webhook import twiml as texts
from tests.support.attack import place_call
from tests.support.demo import FOUND
from tests.support.stack import Stack, Stacks

CALM_WITHIN_S = 3.0
RECOVER_WITHIN_S = 15.0


@pytest.fixture(scope="module")
def server() -> Iterator[LocalPostgres]:
    # Kept on disk so that a restart finds the data; somewhere the postgres user can reach
    # when the tests run as root.
    state = Path(tempfile.mkdtemp(prefix="ivr-pg-outage-"))
    os.chmod(state, 0o711)
    postgres = LocalPostgres(state)
    postgres.start()
    try:
        yield postgres
    finally:
        postgres.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(server: LocalPostgres, module_stack: Stacks) -> Stack:
    env = {"STORE_URL": server.url}  # the backends': the runtime role
    migrate_store(Settings.from_environ({"STORE_URL": server.owner_url}).store)
    return module_stack("store-outage", backend_env=env)


def call(stack: Stack, client: httpx.Client) -> tuple[str, float]:
    started = time.monotonic()
    heard = place_call(client, stack.twilio_token, stack.webhook.url, "1234", "4321")
    return heard, time.monotonic() - started


def test_postgresql_away_then_back(server: LocalPostgres, stack: Stack) -> None:
    with httpx.Client(timeout=20) as client:
        assert call(stack, client)[0] == FOUND
        server.stop()
        try:
            heard, took = call(stack, client)
            assert heard == texts.TRY_LATER
            ready = httpx.get(f"{stack.backend.url}/readyz", timeout=10)
            assert ready.status_code == 503
            assert ready.json()["checks"] == {"store": False}
        finally:
            server.start()
        print(f"store away: the caller heard 'try later' after {took:.2f}s")
        started = time.monotonic()
        while (heard := call(stack, client)[0]) != FOUND:
            assert heard == texts.TRY_LATER
            assert time.monotonic() - started < RECOVER_WITHIN_S
            time.sleep(0.2)
        print(f"store back: served again after {time.monotonic() - started:.2f}s")
    assert httpx.get(f"{stack.backend.url}/readyz", timeout=10).status_code == 200
    logs = stack.backend.stdout_path.read_text() + stack.backend.stderr_path.read_text()
    assert "Traceback" not in logs
