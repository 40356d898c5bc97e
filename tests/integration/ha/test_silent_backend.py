"""A backend that is silent: it accepts connections (the kernel completes the handshake)
and never answers, as a frozen or partitioned one does; a killed one refuses at once,
which is what every earlier drill tried. Real processes on the session's Vault: a backend,
and a webhook whose BACKEND_URL names the silent one first.

Before the silent-fault fixes the webhook's /readyz asked the backends one after the other with
the request's whole 2 s and timed out on the silent one: on make run-ha both webhooks
turned unready together and Caddy answered 503 to 5,854 of 6,179 calls. Now the replicas
are asked at once, and each lookup attempt gets its share of the request budget.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from service.devtools.devstack import DevVault
from service.vault.bootstrap import RoleCredentials
from tests.support.attack import place_call
from tests.support.demo import FOUND
from tests.support.stack import Stack, make_stack

BUDGET_S = 2.5  # REQUEST_BUDGET's default


@pytest.fixture(scope="module")
def silent() -> Iterator[str]:
    """A listening socket nobody reads: connections complete, requests get no answer."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture(scope="module")
def stack(
    dev_vault: DevVault,
    credentials: dict[str, RoleCredentials],
    silent: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    running = make_stack(dev_vault, credentials, tmp_path_factory.mktemp("silent"), start=False)
    running.webhook.env = {**running.webhook.env, "BACKEND_URL": f"{silent},{running.backend.url}"}
    running.backend.start()
    running.webhook.start()
    yield running
    running.stop()


def test_readiness_is_not_held_by_a_silent_replica(stack: Stack) -> None:
    started = time.monotonic()
    ready = httpx.get(f"{stack.webhook.url}/readyz", timeout=10)
    took = time.monotonic() - started
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"vault": True, "backend": True}
    assert took < 1.5, took  # the live replica's answer, not the silent one's timeout


def test_lookups_go_around_the_silent_replica_within_the_budget(stack: Stack) -> None:
    with httpx.Client(timeout=15) as client:
        for _ in range(4):  # every turn of the two replicas, and past the cooldown
            started = time.monotonic()
            assert (
                place_call(client, stack.twilio_token, stack.webhook.url, "1234", "4321") == FOUND
            )
            assert time.monotonic() - started < BUDGET_S + 1.0
            time.sleep(1.0)
