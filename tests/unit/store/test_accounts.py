"""The SQLite account store: verifiers and their key version, each call's remembered
answers, caller failures in a window, card lockout state, and the one transaction a lookup's
decision runs in (the decision itself: tests/unit/backend/test_decision.py)."""

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
    SqliteLedger,
    Store,
    caller_input,
    card_input,
    pin_input,
    verifier_version,
)
from service.store.ledger import Account, CardState

CARD_V1 = "vault:v1:Y2FyZC12MQ=="
PIN_V1 = "vault:v1:cGluLXYx"
CARD_V3 = "vault:v3:Y2FyZC12Mw=="
PIN_V3 = "vault:v3:cGluLXYz"
CALLER = "vault:v1:Y2FsbGVy"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "sub" / "accounts.sqlite3")
    s.upsert_account("AC12345678", "12.55", CARD_V1, PIN_V1)
    return s


# Everything a lookup does goes through Store.transaction and its ledger, as decide() does;
# numbers production never asks for are read straight from the file.


def by_card(store: Store, card: str = CARD_V1) -> Account | None:
    return store.transaction(lambda ledger: ledger.account(card))


def account_id(store: Store, card: str = CARD_V1) -> int:
    account = by_card(store, card)
    assert account is not None
    return account.id


def state_of(store: Store, card: str = CARD_V1) -> CardState:
    aid = account_id(store, card)
    return store.transaction(lambda ledger: ledger.card_state(aid))


def rows(store: Store, table: str) -> int:
    with closing(sqlite3.connect(store.path)) as db:
        (count,) = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
    return int(count)


@pytest.mark.parametrize(("verifier", "version"), [
    ("vault:v1:abc", 1), ("vault:v12:abc=", 12), ("vault:v3:", 3)])
def test_verifier_version(verifier: str, version: int) -> None:
    assert verifier_version(verifier) == version


@pytest.mark.parametrize("bad", ["", "vault", "vault:vX:abc", "1234", "vault:1"])
def test_verifier_version_refuses_what_is_not_an_hmac(bad: str) -> None:
    with pytest.raises(ValueError, match="not a Transit HMAC"):
        verifier_version(bad)


def test_inputs_bind_the_pin_to_its_card_and_keep_callers_apart() -> None:
    assert card_input("1234") == b"card:1234"
    assert pin_input("1234", "4321") != pin_input("5678", "4321")
    assert caller_input("+15005550006") == b"caller:+15005550006"
    assert caller_input("1234") != card_input("1234")


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
    aid = account_id(store)
    store.transaction(lambda ledger: ledger.replace_verifiers(
        aid, "vault:v3:bmV3LWNhcmQ=", "vault:v3:bmV3LXBpbg=="))
    assert store.lookup_versions() == [3]
    assert store.version_counts() == {3: 2}


def test_card_verifiers_are_unique(store: Store) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store.upsert_account("AC00000002", "1.00", CARD_V1, PIN_V3)


def test_card_state_round_trips_and_a_clean_state_leaves_no_row(store: Store) -> None:
    aid = account_id(store)
    assert state_of(store) == CardState()
    for state in (CardState(3), CardState(5, 1_000_900.0), CardState(10, 0.0, hard=True)):
        store.transaction(lambda ledger, s=state: ledger.set_card_state(aid, s))
        assert state_of(store) == state
    assert rows(store, "card_lockout") == 1
    store.transaction(lambda ledger: ledger.set_card_state(aid, CardState()))
    assert rows(store, "card_lockout") == 0


def test_card_state_survives_a_new_store_object(store: Store) -> None:
    aid = account_id(store)
    store.transaction(lambda ledger: ledger.set_card_state(aid, CardState(4)))
    assert state_of(Store(store.path)) == CardState(4)  # a backend restart resets nothing


def test_caller_failures_count_in_a_sliding_window(store: Store) -> None:
    now, window = 1_000_000.0, 86_400.0
    for at in (now, now + 10, now + 20):
        store.transaction(lambda ledger, t=at: ledger.add_caller_failure(CALLER, t, window))
    store.transaction(lambda ledger: ledger.add_caller_failure("vault:v1:b3RoZXI=", now,
                                                               window))

    def count(at: float) -> int:
        return store.transaction(lambda ledger: ledger.caller_failures(CALLER, at - window))

    assert count(now + 30) == 3
    assert count(now + window + 5) == 2  # the first has slid out of the window
    assert count(now + window + 25) == 0
    # Adding sweeps every caller's rows older than the window.
    store.transaction(lambda ledger: ledger.add_caller_failure(CALLER, now + window + 25,
                                                               window))
    assert rows(store, "caller_failures") == 1


def test_answers_are_per_call_and_expire(store: Store) -> None:
    now, ttl = 1_000_000.0, 900.0
    assert store.answer("CA1", "k", now, ttl) is None
    store.transaction(lambda ledger: ledger.remember("CA1", "k", (404, '{"detail": "x"}'),
                                                     now, ttl))
    store.transaction(lambda ledger: ledger.remember("CA1", "k2", (409, "{}"), now + 1, ttl))
    assert store.answer("CA1", "k", now + 10, ttl) == (404, '{"detail": "x"}')
    assert store.answer("CA2", "k", now + 10, ttl) is None
    assert store.answer("CA1", "k", now + ttl, ttl) is None  # expired
    assert store.transaction(lambda ledger: ledger.answers("CA1")) == {
        "k": (404, '{"detail": "x"}'), "k2": (409, "{}")}
    # Remembering sweeps what expired.
    store.transaction(lambda ledger: ledger.remember("CA3", "k", (200, "{}"), now + ttl + 5,
                                                     ttl))
    assert rows(store, "call_answers") == 1


def test_unlock_forgets_failures_and_lifts_the_lock(store: Store) -> None:
    aid = account_id(store)
    store.transaction(lambda ledger: ledger.set_card_state(aid, CardState(10, hard=True)))
    assert store.unlock("AC12345678") == CardState(10, hard=True)
    assert state_of(store) == CardState()
    assert store.unlock("AC12345678") == CardState()  # nothing left to lift
    assert store.unlock("AC00000000") is None


def test_the_schema_has_no_place_for_digits(store: Store) -> None:
    with sqlite3.connect(store.path) as db:
        columns = {table: {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                   for table in ("accounts", "card_lockout", "caller_failures",
                                 "call_answers")}
    assert columns == {
        "accounts": {"id", "account", "balance", "card_verifier", "pin_verifier",
                     "lookup_version"},
        "card_lockout": {"account_id", "failures", "locked_until", "hard"},
        "caller_failures": {"caller", "at"},  # the caller number's HMAC, never the number
        "call_answers": {"call_sid", "request_key", "status", "body", "at"},
    }


def test_a_store_from_before_carries_counts_and_locks_over(tmp_path: Path) -> None:
    """The tables of the windowed lockout (pin_failures, locks, idempotency) become
    card_lockout rows and are dropped."""
    path = tmp_path / "old.sqlite3"
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript("""
            CREATE TABLE accounts (id INTEGER PRIMARY KEY, account TEXT NOT NULL UNIQUE,
                balance TEXT NOT NULL, card_verifier TEXT NOT NULL UNIQUE,
                pin_verifier TEXT NOT NULL, lookup_version INTEGER NOT NULL);
            CREATE TABLE pin_failures (account_id INTEGER NOT NULL, at REAL NOT NULL,
                request_key TEXT);
            CREATE TABLE locks (account_id INTEGER PRIMARY KEY, until REAL NOT NULL);
            CREATE TABLE idempotency (key TEXT PRIMARY KEY, status INTEGER NOT NULL,
                body TEXT NOT NULL, at REAL NOT NULL);
            INSERT INTO accounts VALUES (1, 'AC1', '1.00', 'vault:v1:YQ==', 'vault:v1:Yg==', 1);
            INSERT INTO accounts VALUES (2, 'AC2', '2.00', 'vault:v1:Yw==', 'vault:v1:ZA==', 1);
            INSERT INTO accounts VALUES (3, 'AC3', '3.00', 'vault:v1:ZQ==', 'vault:v1:Zg==', 1);
            INSERT INTO pin_failures VALUES (1, 10, 'a'), (1, 11, 'b'), (1, 12, NULL);
            INSERT INTO locks VALUES (2, 5000);
        """)
    store = Store(path)
    assert state_of(store, "vault:v1:YQ==") == CardState(3)
    assert state_of(store, "vault:v1:Yw==") == CardState(0, 5000.0)
    assert state_of(store, "vault:v1:ZQ==") == CardState()
    with closing(sqlite3.connect(path)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert not {"pin_failures", "locks", "idempotency"} & tables
    Store(path).close()  # opening it again changes nothing


# -- connections and transactions ----------------------------------------------------------


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


def test_a_transaction_is_all_or_nothing(store: Store) -> None:
    aid, now = account_id(store), 1_000_000.0

    def broken(ledger: SqliteLedger) -> None:
        ledger.set_card_state(aid, CardState(2))
        ledger.remember("CA1", "k", (200, "{}"), now, 900)
        ledger.replace_verifiers(aid, "not a verifier", PIN_V3)

    with pytest.raises(ValueError, match="not a Transit HMAC"):
        store.transaction(broken)
    assert state_of(store) == CardState()  # rolled back with the rest
    assert store.answer("CA1", "k", now + 1, 900) is None
    assert store.version_counts() == {1: 1}


def test_transactions_are_one_after_the_other(store: Store) -> None:
    """16 threads each read the count and write it plus one: with BEGIN IMMEDIATE no read
    sees a value another thread is about to replace, so no increment is lost."""
    aid = account_id(store)

    def increment(_: int) -> None:
        def work(ledger: SqliteLedger) -> None:
            state = ledger.card_state(aid)
            time.sleep(0.002)  # widen the window a lost update would need
            ledger.set_card_state(aid, CardState(state.failures + 1))
        store.transaction(work)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(increment, range(48)))
    assert state_of(store) == CardState(48)


def test_a_writer_in_another_process_is_waited_for(store: Store) -> None:
    """Another connection (as `accounts add` would, from another process) holds the write
    lock: the store waits in small steps and writes as soon as it is free."""
    aid, hold = account_id(store), 0.3
    other = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(hold, lambda: other.execute("COMMIT")).start()
    started = time.monotonic()
    store.transaction(lambda ledger: ledger.set_card_state(aid, CardState(1)))
    waited = time.monotonic() - started
    other.close()
    assert state_of(store) == CardState(1)
    assert hold - 0.05 < waited < hold + 0.2


def test_a_writer_that_never_lets_go_fails_after_the_wait(store: Store,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setattr(sqlite_local, "BUSY_WAIT_S", 0.2)
    aid = account_id(store)
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            store.transaction(lambda ledger: ledger.set_card_state(aid, CardState(1)))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert state_of(store) == CardState()
