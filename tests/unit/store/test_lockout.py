"""PIN lockout's window and duration on the real SQLite store, with explicit clocks. The
lockout through the running backend: tests/integration/test_lockout.py."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from service.store.accounts import Lockout, Settlement, Store


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
