"""The store's versioned migrations on SQLite: a new store, a store made before versioned
migrations (tables already there, no history), one made before issue 11 (its windowed
lockout carried over), a store migrated by a newer release, and the statements written
once for both engines. (PostgreSQL, where opening only checks:
tests/integration/store/test_store_engines.py.)"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from service.errors import StoreSchemaMismatch
from service.settings import StoreUrl
from service.store.accounts import SqliteLedger, Store
from service.store.ledger import CardState
from service.store.migrations import ID_COLUMN, LATEST, MIGRATIONS, migrate_store
from tests.support.store import OLD_ACCOUNTS, OLD_LOCKOUT


def state_of(store: Store, card: str) -> CardState:
    """A migrated account's state, found as the card-only lookup finds it."""

    def read(ledger: SqliteLedger) -> CardState:
        account = ledger.legacy_account(card)
        assert account is not None
        return ledger.card_state(account.id)

    return store.transaction(read)


def history(path: Path) -> list[tuple[int, str]]:
    with closing(sqlite3.connect(path)) as db:
        return [
            (int(v), str(n))
            for v, n in db.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        ]


def test_migrations_are_numbered_once_and_in_order() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1))
    assert all(m.name for m in MIGRATIONS)
    # One statement text for both engines; only the id column is spelled per engine.
    assert set(ID_COLUMN) == {"sqlite", "postgresql"}


def test_opening_a_new_sqlite_store_migrates_it(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    Store(path).close()
    assert history(path) == [(m.version, m.name) for m in MIGRATIONS]
    line = migrate_store(StoreUrl.sqlite(str(path)))
    assert line == (
        f"account store sqlite:///{path}: schema at version {LATEST}, nothing to migrate"
    )


def test_a_store_from_before_versioned_migrations_is_taken_as_it_is(tmp_path: Path) -> None:
    """Issue 12's store: every table there, but no schema_migrations. Its rows stay."""
    path = tmp_path / "issue12.sqlite3"
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript(
            OLD_ACCOUNTS
            + OLD_LOCKOUT
            + """
            INSERT INTO accounts VALUES (7, 'AC1', '1.00', 'vault:v1:YQ==', 'vault:v1:Yg==', 1);
            INSERT INTO card_lockout VALUES (7, 4, 0, 0);
        """
        )
    line = migrate_store(StoreUrl.sqlite(str(path)))
    assert line.startswith(f"account store sqlite:///{path}: migrated to version {LATEST}")
    store = Store(path)
    try:
        assert store.version_counts() == {1: 1}
        before = store.unlock("AC1")  # the state it had: issue 12's lockout row stayed
        assert before is not None and before.failures == 4
    finally:
        store.close()
    assert [v for v, _ in history(path)] == list(range(1, LATEST + 1))


def test_a_store_from_before_carries_counts_and_locks_over(tmp_path: Path) -> None:
    """The tables of the windowed lockout (pin_failures, locks, idempotency) become
    card_lockout rows and are dropped."""
    path = tmp_path / "old.sqlite3"
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript(
            OLD_ACCOUNTS
            + """
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
        """
        )
    store = Store(path)
    assert state_of(store, "vault:v1:YQ==") == CardState(3)
    assert state_of(store, "vault:v1:Yw==") == CardState(0, 5000.0)
    assert state_of(store, "vault:v1:ZQ==") == CardState()
    with closing(sqlite3.connect(path)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert not {"pin_failures", "locks", "idempotency"} & tables
    Store(path).close()  # opening it again changes nothing


def test_a_store_from_before_issue_19_keeps_its_verifiers_and_its_card_lookup(
    tmp_path: Path,
) -> None:
    """Schema 3's rebuild of the accounts table: ids, verifiers (unsalted, until the next
    successful lookup), lockout rows and the card-only lookup carried over; each account
    given a salt and a reference; many accounts per card allowed from then on."""
    path = tmp_path / "v2.sqlite3"
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript(
            OLD_ACCOUNTS
            + OLD_LOCKOUT
            + """
            INSERT INTO accounts VALUES (7, 'AC1', '1.00', 'vault:v1:YQ==', 'vault:v1:Yg==', 1);
            INSERT INTO accounts VALUES (9, 'AC2', '2.00', 'vault:v1:Yw==', 'vault:v1:ZA==', 1);
            INSERT INTO card_lockout VALUES (9, 3, 0, 0);
        """
        )
    store = Store(path)
    try:
        assert state_of(store, "vault:v1:Yw==") == CardState(3)
        first = store.transaction(lambda ledger: ledger.legacy_account("vault:v1:YQ=="))
        assert first is not None and (first.id, first.account, first.salted) == (7, "AC1", False)
        assert (first.card_verifier, first.pin_verifier) == ("vault:v1:YQ==", "vault:v1:Yg==")
        assert first.ref.isalpha() and len(first.salt) == 32
        assert store.legacy_accounts() == 2
        with closing(sqlite3.connect(path)) as db:  # the card is no longer unique
            db.execute("PRAGMA foreign_keys=ON")
            db.execute(
                "INSERT INTO accounts(account, ref, balance, salt, card_verifier,"
                " pin_verifier, salted, lookup_version) VALUES ('AC3', 'X', '1',"
                " '00', 'vault:v1:YQ==', 'p', 1, 1)"
            )
    finally:
        store.close()


def test_a_store_from_a_newer_release_is_refused_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    Store(path).close()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT INTO schema_migrations VALUES (?, 'later', 0)", (LATEST + 1,))
    with pytest.raises(StoreSchemaMismatch) as refused:
        Store(path)
    assert str(refused.value) == (
        f"sqlite:///{path}: the account store's schema is at version {LATEST + 1}, newer "
        f"than this release knows ({LATEST}): run the release that migrated it"
    )
