"""What is SQLite's own in the account store: its schema as SQLite sees it, one connection
per thread, and waiting for a writer in another process (the upgrade of older stores:
test_migrations.py). (What the store keeps and what concurrency cannot break, on both engines:
tests/integration/store/test_store_engines.py; the decision itself:
tests/unit/backend/test_decision.py.)"""

from __future__ import annotations

import sqlite3
import string
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from service.store import sqlite as sqlite_local
from service.store.accounts import Refusal, Store, verifier_version
from service.store.identity import (
    SALT_BYTES,
    bind,
    caller_input,
    card_input,
    matches,
    new_reference,
    new_references,
    new_salt,
    new_salts,
    number_input,
    pin_input,
    registered_input,
)
from service.store.ledger import CardState
from tests.support.store import (
    CARD_V1,
    NUMBER_V1,
    account_id,
    by_number,
    count_rows,
    put,
    record,
    state_of,
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "sub" / "accounts.sqlite3")
    put(s)
    return s


@pytest.mark.parametrize(
    ("verifier", "version"), [("vault:v1:abc", 1), ("vault:v12:abc=", 12), ("vault:v3:", 3)]
)
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
    assert number_input("12345678") == b"acctno:12345678"
    assert registered_input("+15005550006") != caller_input("+15005550006")


def test_a_verifier_bound_to_one_account_is_no_other_accounts() -> None:
    """The same card (Transit's same HMAC) on two accounts: two stored verifiers that say
    nothing of each other, each matching only with its own salt; the version prefix
    stays, for rotation."""
    salts = new_salt(), new_salt()
    first, second = (bind(salt, CARD_V1) for salt in salts)
    assert first != second and first.startswith("vault:v1:") and CARD_V1 not in first
    assert matches(first, salts[0], CARD_V1, salted=True)
    assert not matches(first, salts[1], CARD_V1, salted=True)
    assert not matches(first, salts[0], "vault:v1:b3RoZXI=", salted=True)
    assert matches(CARD_V1, salts[0], CARD_V1, salted=False)  # migrated, not yet re-made


def test_references_are_letters_only() -> None:
    references = {new_reference() for _ in range(100)}
    assert len(references) == 100
    assert all(r.isascii() and r.isalpha() and r.isupper() and len(r) == 12 for r in references)


def test_salts_and_references_drawn_many_at_a_time_are_each_new_and_every_letter_used() -> None:
    """One read of random bytes for a whole batch (an import's): each still its own,
    and the letters of the references spread over the whole alphabet."""
    references = new_references(5000)
    assert len(set(references)) == 5000
    assert all(r.isascii() and r.isalpha() and r.isupper() and len(r) == 12 for r in references)
    counts = Counter(letter for r in references for letter in r)
    assert set(counts) == set(string.ascii_uppercase)
    assert max(counts.values()) < 1.2 * min(counts.values())  # 60,000 letters, ~2,300 each
    salts = new_salts(1000)
    assert len(set(salts)) == 1000 and all(len(bytes.fromhex(s)) == SALT_BYTES for s in salts)


def test_the_schema_has_no_place_for_digits(store: Store) -> None:
    with sqlite3.connect(store.path) as db:
        columns = {
            table: {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            for table in (
                "accounts",
                "card_lockout",
                "caller_failures",
                "call_answers",
                "caller_registrations",
            )
        }
    assert columns == {
        "accounts": {
            "id",
            "account",
            "ref",
            "balance",
            "salt",
            "number_verifier",
            "number_version",
            "card_verifier",
            "pin_verifier",
            "salted",
            "legacy_card",
            "lookup_version",
            "last_success",
        },
        "caller_registrations": {"caller_verifier", "account_id", "lookup_version"},
        "card_lockout": {"account_id", "failures", "locked_until", "hard"},
        "caller_failures": {"caller", "at"},  # the caller number's HMAC, never the number
        "call_answers": {"call_sid", "request_key", "status", "body", "at"},
    }


# -- connections and transactions ----------------------------------------------------------


def test_each_thread_keeps_one_connection_and_close_closes_them_all(store: Store) -> None:
    both_running = threading.Barrier(2)

    def conn_of_this_thread(wait: bool = True) -> sqlite3.Connection:
        if wait:  # so that the pool really runs two threads
            both_running.wait(timeout=10)
        db = store._db
        assert isinstance(db, sqlite_local.ThreadConnections)  # a SQLite store's
        first = db.connection()
        assert db.connection() is first  # reused, not one per statement
        pragmas = (
            first.execute("PRAGMA journal_mode").fetchone()[0],
            first.execute("PRAGMA synchronous").fetchone()[0],
            first.execute("PRAGMA busy_timeout").fetchone()[0],
        )
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
    assert by_number(store) is not None  # a later use opens a new one


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


def test_a_writer_that_never_lets_go_fails_after_the_wait(
    store: Store, monkeypatch: pytest.MonkeyPatch
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


def _v(text: str) -> str:
    """A Transit-shaped HMAC of ``text`` (a stand-in: no Vault in unit tests)."""
    return "vault:v1:" + text.encode().hex()


def test_a_batch_is_checked_as_if_its_accounts_were_added_one_by_one(store: Store) -> None:
    """Set-based enrolment (three reads, two writes per batch) refuses exactly what adding
    one at a time would: against the store, and against the batch's earlier records."""
    put(store, "ACHOUSE", number=_v("n-house"), card=_v("c1"), callers=(_v("home"),))
    refusals = store.add_accounts(
        [
            record("ACONE", number=_v("n1"), card=_v("c1"), callers=(_v("x"),)),
            record("ACONE", number=_v("n2")),  # its label, earlier in the batch
            record("ACTHREE", number=_v("n1")),  # its number, earlier in the batch
            record("ACFOUR", number=_v("n4"), card=_v("c1"), callers=(_v("x"),)),
            record("ACFIVE", number=_v("n5"), card=_v("c2"), callers=(_v("x"), _v("x"))),
            record("AC12345678", number=_v("n6")),  # in the store
            record("ACSEVEN", number=NUMBER_V1),  # in the store
            record("ACEIGHT", number=_v("n8"), card=_v("c1"), callers=(_v("home"),)),
            record("ACNINE", number=_v("n9"), card=_v("c2"), callers=(_v("home"),)),
        ]
    )
    assert refusals == [
        None,
        Refusal.LABEL_EXISTS,
        Refusal.NUMBER_ENROLLED,
        Refusal.CALLER_SAME_CARD,
        None,
        Refusal.LABEL_EXISTS,
        Refusal.NUMBER_ENROLLED,
        Refusal.CALLER_SAME_CARD,
        None,
    ]
    assert [s.account for s in store.summaries()] == [
        "AC12345678",
        "ACHOUSE",
        "ACONE",
        "ACFIVE",
        "ACNINE",
    ]
    assert [s.callers for s in store.summaries()] == [0, 1, 1, 1, 1]
    assert by_number(store, _v("n5")) is not None and by_number(store, _v("n4")) is None


def test_the_listing_reads_page_by_page_and_knows_no_digit(store: Store) -> None:
    for i in range(6):
        put(store, f"ACPAGE{chr(65 + i)}", number=_v(f"page{i}"), callers=(_v(f"p{i}"),))
    pages = [s.account for s in store.summaries(page=4)]
    assert pages == ["AC12345678", *(f"ACPAGE{chr(65 + i)}" for i in range(6))]
    first = next(store.summaries())
    assert (first.by_number, first.callers, first.legacy, first.state, first.last_success) == (
        True,
        0,
        False,
        CardState(),
        None,
    )
    assert first.ref.isalpha()


def test_an_account_removed_takes_its_registrations_and_lockout(store: Store) -> None:
    put(store, "ACGONE", number=_v("gone"), callers=(_v("g"),))
    aid = account_id(store, _v("gone"))
    store.transaction(lambda ledger: ledger.set_card_state(aid, CardState(3, 0, False)))
    reference = store.remove("ACGONE")
    assert reference is not None and reference.isalpha()
    assert store.remove("ACGONE") is None
    assert count_rows(store, "caller_registrations") == 0
    assert count_rows(store, "card_lockout") == 0
