"""PIN guessing: after 5 wrong PINs for one card within 15 minutes the backend answers 423
for that card for 15 minutes. The state is in the store (it survives a backend restart)
and keyed by the account the card verifier finds (a new call does not reset it). The
caller hears the same generic sentence as for a wrong PIN: no oracle for a guesser.

The backend is attacked directly, with ciphertexts made by the webhook's own AppRole,
as a compromised webhook would; a private stack keeps the lock away from other tests.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from service.backend.enrolment import add_account
from service.devtools.caller import Caller, new_call_sid
from service.devtools.devstack import DevVault
from service.store.accounts import Lockout, Settlement, Store
from service.vault.bootstrap import RoleCredentials
from service.vault.client import VaultClient
from service.vault.transit import call_context
from service.webhook import twiml as texts
from tests.conftest import Stack, make_stack, role_client

OTHER = ("AC87654321", "99.10", "5678", "8765")


@pytest.fixture(scope="module")
def private(dev_vault: DevVault, credentials: dict[str, RoleCredentials],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = make_stack(dev_vault, credentials, tmp_path_factory.mktemp("lockout"))
    account, balance, last4, pin = OTHER
    add_account(running.backend_settings(), account=account, balance=balance, last4=last4,
                pin=pin)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def webhook_vault(dev_vault: DevVault,
                  credentials: dict[str, RoleCredentials]) -> Iterator[VaultClient]:
    client = role_client(dev_vault, credentials["ivr-webhook"])
    yield client
    client.close()


def encrypt(vault: VaultClient, call_sid: str, field: str, digits: str) -> str:
    answer = vault.write("transit/encrypt/ivr-dtmf", "encrypt", {
        "plaintext": base64.b64encode(digits.encode()).decode(),
        "context": base64.b64encode(call_context(call_sid, field)).decode()})
    ciphertext: str = answer["data"]["ciphertext"]
    return ciphertext


def lookup(stack: Stack, vault: VaultClient, last4: str, pin: str) -> httpx.Response:
    """One call's lookup: a new CallSid every time, as a guesser redialling would."""
    call_sid = new_call_sid()
    body = {"call_sid": call_sid, "card_last4": encrypt(vault, call_sid, "card_last4", last4),
            "pin": encrypt(vault, call_sid, "pin", pin)}
    return httpx.post(f"{stack.backend.url}/v1/lookup", json=body, timeout=10,
                      headers={"Authorization": f"Bearer {stack.backend_token}"})


def test_five_wrong_pins_lock_the_card_across_calls_and_restarts(
        private: Stack, webhook_vault: VaultClient) -> None:
    for guess in ("0000", "1111", "2222", "3333"):
        assert lookup(private, webhook_vault, "1234", guess).status_code == 404
    # Four failures: the right PIN still works, and clears the count.
    assert lookup(private, webhook_vault, "1234", "4321").status_code == 200
    for guess in ("0000", "1111", "2222", "3333", "5555"):
        assert lookup(private, webhook_vault, "1234", guess).status_code == 404
    locked = lookup(private, webhook_vault, "1234", "4321")
    assert locked.status_code == 423
    assert locked.json() == {"detail": "locked"}
    # Another card is not affected.
    assert lookup(private, webhook_vault, OTHER[2], OTHER[3]).json() == {
        "account": OTHER[0], "balance": OTHER[1]}

    # The lock is in the store: a restarted backend still refuses, even the right PIN.
    private.backend.stop()
    private.backend.start()
    assert lookup(private, webhook_vault, "1234", "4321").status_code == 423

    # The caller hears the generic sentence, exactly as for a wrong PIN.
    heard: list[str] = []
    with httpx.Client(timeout=10) as client:
        Caller(private.webhook.url, private.twilio_token, client,
               say=heard.append).play(["1234", "4321"])
    assert heard[-1] == texts.NOT_FOUND == texts.LOCKED


# -- the window and the duration, on the real SQLite store with explicit clocks ----------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "s.sqlite3")
    store.upsert_account("AC1", "1.00", "vault:v1:card", "vault:v1:pin")
    return store


# Written through Store.settle and read through Store.find, as the lookup does.


def _account_id(store: Store) -> int:
    found = store.find("vault:v1:card", 0)
    assert found is not None
    return found.account.id


def fail(store: Store, at: float, key: str | None = None) -> bool:
    return store.settle(Settlement(at, request_key=key, failed_account=_account_id(store),
                                   lockout=Lockout(window=900, threshold=5, duration=900)))


def locked(store: Store, at: float) -> bool:
    found = store.find("vault:v1:card", at)
    assert found is not None
    return found.locked


def failure_count(store: Store) -> int:
    with closing(sqlite3.connect(store.path)) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM pin_failures").fetchone()
    return int(count)


def test_fifth_failure_in_the_window_locks_for_the_duration(store: Store) -> None:
    assert [fail(store, t) for t in (0, 100, 200, 300)] == [False] * 4
    assert fail(store, 400) is True
    assert locked(store, 401) is True
    assert locked(store, 1299.999) is True  # locked until 400 + 900
    assert locked(store, 1300) is False


def test_failures_outside_the_window_do_not_add_up(store: Store) -> None:
    # One failure every 4 minutes: never 5 within 15 minutes.
    assert not any(fail(store, t) for t in range(0, 240 * 20, 240))
    assert locked(store, 240 * 20) is False


def test_a_success_clears_the_count(store: Store) -> None:
    for t in (0, 1, 2, 3):
        fail(store, t)
    store.settle(Settlement(3.5, cleared_account=_account_id(store)))
    assert failure_count(store) == 0
    assert [fail(store, t) for t in (4, 5, 6, 7)] == [False] * 4


def test_the_same_request_is_one_failure(store: Store) -> None:
    for _ in range(10):
        assert fail(store, 5, key="CA1|token") is False
    assert failure_count(store) == 1
