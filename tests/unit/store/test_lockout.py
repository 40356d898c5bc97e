"""PIN lockout's window and duration on the real SQLite store, with explicit clocks. The
lockout through the running backend: tests/integration/test_lockout.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.store.accounts import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "s.sqlite3")
    store.upsert_account("AC1", "1.00", "vault:v1:card", "vault:v1:pin")
    return store


def _account_id(store: Store) -> int:
    account = store.find_by_card("vault:v1:card")
    assert account is not None
    return account.id


def fail(store: Store, at: float, key: str | None = None) -> bool:
    return store.record_failure(_account_id(store), at, window=900, threshold=5,
                                duration=900, request_key=key)


def test_fifth_failure_in_the_window_locks_for_the_duration(store: Store) -> None:
    assert [fail(store, t) for t in (0, 100, 200, 300)] == [False] * 4
    assert fail(store, 400) is True
    account = _account_id(store)
    assert store.locked_until(account, 401) == 1300
    assert store.locked_until(account, 1299) == 1300
    assert store.locked_until(account, 1300) is None


def test_failures_outside_the_window_do_not_add_up(store: Store) -> None:
    # One failure every 4 minutes: never 5 within 15 minutes.
    assert not any(fail(store, t) for t in range(0, 240 * 20, 240))
    assert store.locked_until(_account_id(store), 240 * 20) is None


def test_a_success_clears_the_count(store: Store) -> None:
    for t in (0, 1, 2, 3):
        fail(store, t)
    store.clear_failures(_account_id(store))
    assert store.failure_count(_account_id(store)) == 0
    assert [fail(store, t) for t in (4, 5, 6, 7)] == [False] * 4


def test_the_same_request_is_one_failure(store: Store) -> None:
    for _ in range(10):
        assert fail(store, 5, key="CA1|token") is False
    assert store.failure_count(_account_id(store)) == 1
