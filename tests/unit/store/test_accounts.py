"""The SQLite account store: verifiers and their key version, failed-PIN counting and
locks, and the idempotency memory that keeps a Twilio retry from counting twice."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from service.store import sqlite as sqlite_local
from service.store.accounts import (
    Account,
    Lockout,
    Settlement,
    Store,
    card_input,
    pin_input,
    verifier_version,
)

CARD_V1 = "vault:v1:Y2FyZC12MQ=="
PIN_V1 = "vault:v1:cGluLXYx"
CARD_V3 = "vault:v3:Y2FyZC12Mw=="
PIN_V3 = "vault:v3:cGluLXYz"
WINDOW, THRESHOLD, DURATION = 900.0, 3, 600.0
LOCKOUT = Lockout(WINDOW, THRESHOLD, DURATION)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "sub" / "accounts.sqlite3")
    s.upsert_account("AC12345678", "12.55", CARD_V1, PIN_V1)
    return s


# Every write goes through Store.settle, as the lookup's do; reads through Store.find, or
# straight from the file where a test needs a number production never asks for.


def fail(store: Store, account: int, at: float, request_key: str | None = None) -> bool:
    return store.settle(Settlement(at, request_key=request_key, failed_account=account,
                                   lockout=LOCKOUT))


def by_card(store: Store, card: str = CARD_V1) -> Account | None:
    found = store.find(card, time.time())
    return found.account if found else None


def account_id(store: Store, card: str = CARD_V1) -> int:
    account = by_card(store, card)
    assert account is not None
    return account.id


def locked(store: Store, at: float, card: str = CARD_V1) -> bool:
    found = store.find(card, at)
    assert found is not None
    return found.locked


def failure_count(store: Store, account: int) -> int:
    with closing(sqlite3.connect(store.path)) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM pin_failures WHERE account_id=?",
                              (account,)).fetchone()
    return int(count)


def remembered_keys(store: Store) -> list[str]:
    with closing(sqlite3.connect(store.path)) as db:
        return [row[0] for row in db.execute("SELECT key FROM idempotency")]


@pytest.mark.parametrize(("verifier", "version"), [
    ("vault:v1:abc", 1), ("vault:v12:abc=", 12), ("vault:v3:", 3)])
def test_verifier_version(verifier: str, version: int) -> None:
    assert verifier_version(verifier) == version


@pytest.mark.parametrize("bad", ["", "vault", "vault:vX:abc", "1234", "vault:1"])
def test_verifier_version_refuses_what_is_not_an_hmac(bad: str) -> None:
    with pytest.raises(ValueError, match="not a Transit HMAC"):
        verifier_version(bad)


def test_inputs_bind_the_pin_to_its_card() -> None:
    assert card_input("1234") == b"card:1234"
    assert pin_input("1234", "4321") != pin_input("5678", "4321")


def test_find_and_upsert(store: Store) -> None:
    account = by_card(store, CARD_V1)
    assert account is not None
    assert (account.account, account.balance, account.pin_verifier, account.lookup_version) \
        == ("AC12345678", "12.55", PIN_V1, 1)
    assert by_card(store, CARD_V3) is None
    store.upsert_account("AC12345678", "99.00", CARD_V3, PIN_V3)  # same account, re-made
    assert by_card(store, CARD_V1) is None
    updated = by_card(store, CARD_V3)
    assert updated is not None and updated.id == account.id
    assert (updated.balance, updated.lookup_version) == ("99.00", 3)


def test_versions_and_replacement(store: Store) -> None:
    store.upsert_account("AC00000002", "1.00", CARD_V3, PIN_V3)
    assert store.lookup_versions() == [3, 1]
    assert store.version_counts() == {1: 1, 3: 1}
    store.settle(Settlement(time.time(), upgrade=(account_id(store), "vault:v3:bmV3LWNhcmQ=",
                                                  "vault:v3:bmV3LXBpbg==")))
    assert store.lookup_versions() == [3]
    assert store.version_counts() == {3: 2}


def test_card_verifiers_are_unique(store: Store) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store.upsert_account("AC00000002", "1.00", CARD_V1, PIN_V3)


def test_wrong_pins_lock_at_the_threshold(store: Store) -> None:
    aid, now = account_id(store), 1_000_000.0
    assert fail(store, aid, now) is False
    assert fail(store, aid, now + 1) is False
    assert locked(store, now + 2) is False
    assert fail(store, aid, now + 2) is True
    assert locked(store, now + 3) is True
    # The lock ends by itself, at now + 2 + DURATION; the count started over when it was set.
    assert locked(store, now + 2 + DURATION - 0.001) is True
    assert locked(store, now + 2 + DURATION) is False
    assert fail(store, aid, now + 700) is False


def test_failures_outside_the_window_do_not_count(store: Store) -> None:
    aid, now = account_id(store), 1_000_000.0
    fail(store, aid, now)
    fail(store, aid, now + 1)
    # At now + WINDOW + 0.5 the first failure has left the window: two count, not three.
    assert fail(store, aid, now + WINDOW + 0.5) is False
    assert fail(store, aid, now + WINDOW + 0.7) is True


def test_a_correct_pin_clears_the_count(store: Store) -> None:
    aid, now = account_id(store), 1_000_000.0
    fail(store, aid, now)
    fail(store, aid, now + 1)
    store.settle(Settlement(now + 1.5, cleared_account=aid))
    assert fail(store, aid, now + 2) is False


def test_failures_are_per_account_and_survive_a_new_store_object(store: Store) -> None:
    store.upsert_account("AC00000002", "1.00", CARD_V3, PIN_V3)
    aid, other, now = account_id(store), account_id(store, CARD_V3), 1_000_000.0
    fail(store, aid, now)
    fail(store, aid, now + 1)
    assert fail(store, other, now + 2) is False
    reopened = Store(store.path)  # a backend restart does not reset the count
    assert fail(reopened, aid, now + 3) is True


def test_idempotency_memory(store: Store) -> None:
    now, ttl = 1_000_000.0, 900.0
    assert store.remembered("CA1|key", now, ttl) is None
    store.settle(Settlement(now, request_key="CA1|key", answer=(404, '{"detail": "not found"}'),
                            answer_ttl=ttl))
    assert store.remembered("CA1|key", now + 10, ttl) == (404, '{"detail": "not found"}')
    assert store.remembered("CA2|key", now + 10, ttl) is None
    assert store.remembered("CA1|key", now + ttl, ttl) is None  # expired
    # also sweeps the old entry
    store.settle(Settlement(now + ttl + 1, request_key="CA3|key", answer=(200, "{}"),
                            answer_ttl=ttl))
    assert remembered_keys(store) == ["CA3|key"]


def test_the_schema_has_no_place_for_digits(store: Store) -> None:
    with sqlite3.connect(store.path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(accounts)")}
    assert columns == {"id", "account", "balance", "card_verifier", "pin_verifier",
                       "lookup_version"}


# -- connections, transactions and the lookup's two calls --------------------------------


def test_each_thread_keeps_one_connection_and_close_closes_them_all(store: Store) -> None:
    both_running = threading.Barrier(2)

    def conn_of_this_thread(wait: bool = True) -> sqlite3.Connection:
        if wait:  # so that the pool really runs two threads
            both_running.wait(timeout=10)
        first = store._db.connection()
        assert store._db.connection() is first  # reused, not one per statement
        pragmas = (first.execute("PRAGMA journal_mode").fetchone()[0],
                   first.execute("PRAGMA synchronous").fetchone()[0],
                   first.execute("PRAGMA busy_timeout").fetchone()[0])
        assert pragmas == ("wal", 1, 0)  # WAL, NORMAL, SQLite's sleeping handler off
        return first

    with ThreadPoolExecutor(max_workers=2) as pool:
        others = [f.result() for f in [pool.submit(conn_of_this_thread) for _ in range(4)]]
    mine = conn_of_this_thread(wait=False)
    assert len({id(c) for c in [*others, mine]}) == 3  # two pool threads and this one
    store.close()
    for db in [*others, mine]:
        with pytest.raises(sqlite3.ProgrammingError):
            db.execute("SELECT 1")
    assert by_card(store, CARD_V1) is not None  # a later use opens a new one


def test_find_reads_account_lock_and_failures_at_once(store: Store) -> None:
    aid, now = account_id(store), 1_000_000.0
    found = store.find(CARD_V1, now)
    assert found is not None and (found.account.id, found.locked, found.has_failures) \
        == (aid, False, False)
    fail(store, aid, now)
    found = store.find(CARD_V1, now)
    assert found is not None and (found.locked, found.has_failures) == (False, True)
    fail(store, aid, now + 1)
    fail(store, aid, now + 2)  # locks, and the count starts over
    found = store.find(CARD_V1, now + 3)
    assert found is not None and (found.locked, found.has_failures) == (True, False)
    found = store.find(CARD_V1, now + 2 + DURATION)
    assert found is not None and found.locked is False
    assert store.find(CARD_V3, now) is None


def test_settle_writes_failure_and_remembered_answer_together(store: Store) -> None:
    aid, now = account_id(store), 1_000_000.0
    settle = Settlement(now, request_key="CA1|k", answer=(404, '{"detail": "not found"}'),
                        answer_ttl=900, failed_account=aid, lockout=LOCKOUT)
    assert store.settle(settle) is False
    assert failure_count(store, aid) == 1
    assert store.remembered("CA1|k", now + 1, 900) == (404, '{"detail": "not found"}')
    assert store.settle(settle) is False  # the same request again is not a second failure
    assert failure_count(store, aid) == 1


def test_settle_is_all_or_nothing(store: Store) -> None:
    aid, now = account_id(store), 1_000_000.0
    fail(store, aid, now)
    broken = Settlement(now + 1, request_key="CA1|k", answer=(200, "{}"), answer_ttl=900,
                        cleared_account=aid, upgrade=(aid, "not a verifier", PIN_V3))
    with pytest.raises(ValueError, match="not a Transit HMAC"):
        store.settle(broken)
    assert failure_count(store, aid) == 1  # the clear was rolled back with the rest
    assert store.remembered("CA1|k", now + 1, 900) is None
    good = Settlement(now + 1, request_key="CA1|k", answer=(200, "{}"), answer_ttl=900,
                      cleared_account=aid, upgrade=(aid, CARD_V3, PIN_V3))
    assert store.settle(good) is False
    assert failure_count(store, aid) == 0
    assert store.version_counts() == {3: 1}
    assert store.remembered("CA1|k", now + 2, 900) == (200, "{}")


def test_settlement_with_nothing_to_write_is_empty() -> None:
    assert Settlement(1.0).is_empty()
    assert Settlement(1.0, answer=(200, "{}")).is_empty()  # no request key: not remembered
    assert not Settlement(1.0, request_key="k", answer=(200, "{}")).is_empty()
    assert not Settlement(1.0, cleared_account=1).is_empty()
    assert not Settlement(1.0, failed_account=1, lockout=LOCKOUT).is_empty()


def test_concurrent_wrong_pins_lock_exactly_at_each_threshold(store: Store) -> None:
    """16 threads fail at once: every failure is counted once, in order, so the account
    locks at the 3rd, 6th, 9th ... failure and no count is lost between threads."""
    aid, now = account_id(store), 1_000_000.0

    def one(i: int) -> bool:
        return fail(store, aid, now, request_key=f"CA{i}|k")

    with ThreadPoolExecutor(max_workers=16) as pool:
        locked = list(pool.map(one, range(16)))
    assert sum(locked) == 16 // THRESHOLD
    assert failure_count(store, aid) == 16 % THRESHOLD


def test_a_writer_in_another_process_is_waited_for(store: Store) -> None:
    """Another connection (as `accounts add` would, from another process) holds the write
    lock: the store waits in small steps and writes as soon as it is free."""
    aid, hold = account_id(store), 0.3
    other = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(hold, lambda: other.execute("COMMIT")).start()
    started = time.monotonic()
    fail(store, aid, 1_000_000.0)
    waited = time.monotonic() - started
    other.close()
    assert failure_count(store, aid) == 1
    assert hold - 0.05 < waited < hold + 0.2


def test_a_writer_that_never_lets_go_fails_after_the_wait(store: Store,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setattr(sqlite_local, "BUSY_WAIT_S", 0.2)
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            fail(store, account_id(store), 1_000_000.0)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert failure_count(store, account_id(store)) == 0
