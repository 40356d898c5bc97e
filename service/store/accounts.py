"""The account store: SQLite, holding HMAC verifiers and never a digit.

A card is found by ``HMAC(ivr-lookup, "card:" + last4)``; its PIN is checked against
``HMAC(ivr-lookup, "pin:" + last4 + ":" + pin)``, so equal PINs on different cards have
different verifiers. Verifiers carry their key version (``vault:vN:...``); after
``ivr-lookup`` rotates, a record is re-made with the latest version at its next
successful lookup. A card's consecutive wrong PINs and its lock, the failed lookups of
each caller number (by its keyed HMAC ``HMAC(ivr-lookup, "caller:" + number)``, never the
number) and each call's remembered answers live here too, so a backend restart or a new
call resets none of them.

sqlite3 blocks; the backend calls this from a thread pool. Each thread keeps one
connection (opening one costs more than the statements a lookup runs). A lookup's whole
decision (the lock check, the PIN comparison, every write it implies) runs in one
``BEGIN IMMEDIATE`` transaction through :meth:`Store.transaction` and a
:class:`SqliteLedger` (the contract: ``service/store/ledger.py``).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Final, TypeVar

from service.errors import ConfigError
from service.store.ledger import Account, Answer, CardState
from service.store.sqlite import ThreadConnections
from service.vault.formats import transit_version

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY,
    account TEXT NOT NULL UNIQUE,
    balance TEXT NOT NULL,
    card_verifier TEXT NOT NULL UNIQUE,
    pin_verifier TEXT NOT NULL,
    lookup_version INTEGER NOT NULL
);
-- One row per card with wrong PINs on record: forgotten only on a correct PIN or an unlock.
CREATE TABLE IF NOT EXISTS card_lockout (
    account_id INTEGER PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    failures INTEGER NOT NULL,
    locked_until REAL NOT NULL,
    hard INTEGER NOT NULL
);
-- One row per failed lookup of a caller number (its keyed HMAC), for a sliding window.
CREATE TABLE IF NOT EXISTS caller_failures (
    caller TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS caller_failures_by_caller ON caller_failures(caller, at);
CREATE INDEX IF NOT EXISTS caller_failures_by_age ON caller_failures(at);
-- The answers each call's lookups were given: a retry of the same request gets its answer
-- again, and a second lookup in a call is seen as one.
CREATE TABLE IF NOT EXISTS call_answers (
    call_sid TEXT NOT NULL,
    request_key TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (call_sid, request_key)
);
-- Every remembered answer first deletes expired ones: without this index that is a scan of
-- the whole table, inside the write lock, on every lookup (bench/RESULTS.md).
CREATE INDEX IF NOT EXISTS call_answers_by_age ON call_answers(at);
"""

# One canary per ivr-lookup version a stored verifier has used: the HMAC of a fixed label
# (service/backend/keycheck.py), never of caller data. A Vault that cannot reproduce it
# cannot reproduce the verifiers either.
_CANARY_SCHEMA = """
CREATE TABLE IF NOT EXISTS lookup_canaries (
    version INTEGER PRIMARY KEY,
    hmac TEXT NOT NULL,
    at REAL NOT NULL
);
"""


# Every table the store needs, as the schemas above create them.
TABLES: Final[frozenset[str]] = frozenset(
    re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA + _CANARY_SCHEMA))


def existing_tables(path: str | Path) -> frozenset[str]:
    """The tables of the store at ``path``, read only: nothing is created, migrated or
    written (``ivr-vault doctor``; :class:`Store` itself creates what is missing). Raises
    :class:`~service.errors.ConfigError` naming STORE_PATH when it is not a store."""
    target = Path(path)
    if not target.is_file():
        raise ConfigError("STORE_PATH: no store there")
    try:
        with closing(sqlite3.connect(f"{target.resolve().as_uri()}?mode=ro", uri=True,
                                     timeout=5)) as db:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    except sqlite3.Error as exc:
        raise ConfigError(f"STORE_PATH: not a readable SQLite store ({type(exc).__name__})"
                          ) from None
    return frozenset(str(row[0]) for row in rows)


def verifier_version(verifier: str) -> int:
    """``vault:v3:...`` → 3. Strict, so that something that is not a Transit HMAC is never
    stored as if it were one."""
    version = transit_version(verifier)
    if version is None:
        raise ValueError("not a Transit HMAC")
    return version


def card_input(last4: str) -> bytes:
    return f"card:{last4}".encode()


def pin_input(last4: str, pin: str) -> bytes:
    return f"pin:{last4}:{pin}".encode()


def caller_input(caller: str) -> bytes:
    """What is HMACed for a caller number's failure count (``caller_bucket``'s output)."""
    return f"caller:{caller}".encode()


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = ThreadConnections(self.path)
        self._run = self._db.run  # work on this thread's connection, optionally a write
        # Retried while another process writes.
        self._run(lambda db: db.executescript(_SCHEMA + _CANARY_SCHEMA))
        self._run(_migrate, write=True)

    def close(self) -> None:
        """Close every thread's connection (backend shutdown)."""
        self._db.close()

    # -- the lookup ---------------------------------------------------------------------

    def transaction(self, work: Callable[[SqliteLedger], T]) -> T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction: it sees and writes the store
        while no other decision can, in this process or another; all its writes commit
        together, or none if it raises."""
        return self._run(lambda db: work(SqliteLedger(db)), write=True)

    def answer(self, call_sid: str, request_key: str, now: float,
               ttl: float) -> Answer | None:
        """The answer already given to this very request, if any (a read, outside any
        transaction: a Twilio retry is answered without Vault)."""
        row = self._run(lambda db: db.execute(
            "SELECT status, body FROM call_answers WHERE call_sid=? AND request_key=?"
            " AND at > ?", (call_sid, request_key, now - ttl)).fetchone())
        return (int(row[0]), str(row[1])) if row else None

    # -- accounts -------------------------------------------------------------------

    def upsert_account(self, account: str, balance: str, card_verifier: str,
                       pin_verifier: str) -> None:
        version = verifier_version(card_verifier)
        self._run(lambda db: db.execute(
            "INSERT INTO accounts(account, balance, card_verifier, pin_verifier,"
            " lookup_version) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(account) DO UPDATE SET balance=excluded.balance,"
            " card_verifier=excluded.card_verifier, pin_verifier=excluded.pin_verifier,"
            " lookup_version=excluded.lookup_version",
            (account, balance, card_verifier, pin_verifier, version)), write=True)

    def unlock(self, account: str) -> CardState | None:
        """Forget an account's wrong PINs and lift its lock (an operator's
        ``accounts unlock``). Returns the state it had, or None when there is no such
        account."""
        def work(db: sqlite3.Connection) -> CardState | None:
            row = db.execute("SELECT id FROM accounts WHERE account=?", (account,)).fetchone()
            if row is None:
                return None
            ledger = SqliteLedger(db)
            before = ledger.card_state(int(row[0]))
            db.execute("DELETE FROM card_lockout WHERE account_id=?", (int(row[0]),))
            return before
        return self._run(work, write=True)

    def lookup_versions(self) -> list[int]:
        """The ``ivr-lookup`` versions that stored verifiers use, newest first."""
        return self._run(lambda db: SqliteLedger(db).versions())

    def version_counts(self) -> dict[int, int]:
        rows = self._run(lambda db: db.execute(
            "SELECT lookup_version, COUNT(*) FROM accounts GROUP BY lookup_version"
        ).fetchall())
        return {int(v): int(n) for v, n in rows}

    def has_account(self, account: str) -> bool:
        row = self._run(lambda db: db.execute(
            "SELECT 1 FROM accounts WHERE account=?", (account,)).fetchone())
        return row is not None

    # -- ivr-lookup canaries ----------------------------------------------------------

    def canaries(self) -> dict[int, str]:
        """version → the canary HMAC recorded when that version was first used."""
        rows = self._run(lambda db: db.execute(
            "SELECT version, hmac FROM lookup_canaries").fetchall())
        return {int(v): str(h) for v, h in rows}

    def add_canary(self, canary: str, now: float) -> None:
        """Record a version's canary; a canary already recorded is never replaced."""
        self._run(lambda db: db.execute(
            "INSERT OR IGNORE INTO lookup_canaries(version, hmac, at) VALUES (?, ?, ?)",
            (verifier_version(canary), canary, now)), write=True)


class SqliteLedger:
    """:class:`~service.store.ledger.Ledger` on one connection inside ``BEGIN IMMEDIATE``:
    the write lock is already held, so reads need no row locks. Portable SQL throughout
    but for ``INSERT OR REPLACE`` (PostgreSQL: ``ON CONFLICT … DO UPDATE``)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def answers(self, call_sid: str) -> dict[str, Answer]:
        rows = self._db.execute("SELECT request_key, status, body FROM call_answers"
                                " WHERE call_sid=?", (call_sid,)).fetchall()
        return {str(key): (int(status), str(body)) for key, status, body in rows}

    def remember(self, call_sid: str, request_key: str, answer: Answer, now: float,
                 ttl: float) -> None:
        self._db.execute("DELETE FROM call_answers WHERE at <= ?", (now - ttl,))
        self._db.execute("INSERT OR REPLACE INTO call_answers(call_sid, request_key, status,"
                         " body, at) VALUES (?, ?, ?, ?, ?)",
                         (call_sid, request_key, *answer, now))

    def account(self, card_verifier: str) -> Account | None:
        row = self._db.execute("SELECT * FROM accounts WHERE card_verifier=?",
                               (card_verifier,)).fetchone()
        return Account(**dict(row)) if row else None

    def versions(self) -> list[int]:
        rows = self._db.execute("SELECT DISTINCT lookup_version FROM accounts"
                                " ORDER BY lookup_version DESC").fetchall()
        return [int(r[0]) for r in rows]

    def card_state(self, account_id: int) -> CardState:
        row = self._db.execute("SELECT failures, locked_until, hard FROM card_lockout"
                               " WHERE account_id=?", (account_id,)).fetchone()
        if row is None:
            return CardState()
        return CardState(int(row[0]), float(row[1]), bool(row[2]))

    def set_card_state(self, account_id: int, state: CardState) -> None:
        if state == CardState():
            self._db.execute("DELETE FROM card_lockout WHERE account_id=?", (account_id,))
            return
        self._db.execute("INSERT OR REPLACE INTO card_lockout(account_id, failures,"
                         " locked_until, hard) VALUES (?, ?, ?, ?)",
                         (account_id, state.failures, state.locked_until, int(state.hard)))

    def replace_verifiers(self, account_id: int, card_verifier: str,
                          pin_verifier: str) -> None:
        self._db.execute("UPDATE accounts SET card_verifier=?, pin_verifier=?,"
                         " lookup_version=? WHERE id=?",
                         (card_verifier, pin_verifier, verifier_version(card_verifier),
                          account_id))

    def caller_failures(self, caller: str, since: float) -> int:
        (count,) = self._db.execute("SELECT COUNT(*) FROM caller_failures"
                                    " WHERE caller=? AND at > ?", (caller, since)).fetchone()
        return int(count)

    def add_caller_failure(self, caller: str, now: float, window: float) -> None:
        self._db.execute("DELETE FROM caller_failures WHERE at <= ?", (now - window,))
        self._db.execute("INSERT INTO caller_failures(caller, at) VALUES (?, ?)",
                         (caller, now))


def _migrate(db: sqlite3.Connection) -> None:
    """A store made before issue 11 counted wrong PINs in a window (``pin_failures``,
    ``locks``) and remembered answers by key alone (``idempotency``): carry each card's
    count and lock over, then drop the old tables."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if {"pin_failures", "locks"} <= tables:  # the old schema made both
        db.execute(
            "INSERT OR IGNORE INTO card_lockout(account_id, failures, locked_until, hard)"
            " SELECT a.id, (SELECT COUNT(*) FROM pin_failures f WHERE f.account_id=a.id),"
            " COALESCE((SELECT until FROM locks l WHERE l.account_id=a.id), 0), 0"
            " FROM accounts a WHERE a.id IN (SELECT account_id FROM pin_failures"
            " UNION SELECT account_id FROM locks)")
    for old in ("pin_failures", "locks", "idempotency"):
        if old in tables:
            db.execute(f"DROP TABLE {old}")
