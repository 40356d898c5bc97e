"""The account store: SQLite, holding HMAC verifiers and never a digit.

A card is found by ``HMAC(ivr-lookup, "card:" + last4)``; its PIN is checked against
``HMAC(ivr-lookup, "pin:" + last4 + ":" + pin)``, so equal PINs on different cards have
different verifiers. Verifiers carry their key version (``vault:vN:...``); after
``ivr-lookup`` rotates, a record is re-made with the latest version at its next
successful lookup. Failed-PIN counts and locks live here too, so a backend restart or a
new call does not reset them.

sqlite3 blocks; the backend calls this from a thread pool. One connection per call keeps
it thread-safe without a lock of our own; WAL lets readers run beside the writer.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY,
    account TEXT NOT NULL UNIQUE,
    balance TEXT NOT NULL,
    card_verifier TEXT NOT NULL UNIQUE,
    pin_verifier TEXT NOT NULL,
    lookup_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pin_failures (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    at REAL NOT NULL,
    request_key TEXT
);
CREATE INDEX IF NOT EXISTS pin_failures_by_account ON pin_failures(account_id, at);
CREATE TABLE IF NOT EXISTS locks (
    account_id INTEGER PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    at REAL NOT NULL
);
-- Every remember() first deletes expired keys: without this index that is a scan of the
-- whole table, inside the write lock, on every lookup (bench/RESULTS.md).
CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency(at);
"""


_VERIFIER = re.compile(r"vault:v([1-9][0-9]{0,8}):")


def verifier_version(verifier: str) -> int:
    """``vault:v3:...`` → 3. Strict, so that something that is not a Transit HMAC is never
    stored as if it were one."""
    match = _VERIFIER.match(verifier)
    if match is None:
        raise ValueError("not a Transit HMAC")
    return int(match[1])


def card_input(last4: str) -> bytes:
    return f"card:{last4}".encode()


def pin_input(last4: str, pin: str) -> bytes:
    return f"pin:{last4}:{pin}".encode()


@dataclass(frozen=True)
class Account:
    id: int
    account: str
    balance: str
    card_verifier: str
    pin_verifier: str
    lookup_version: int


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(pin_failures)")}
            if "request_key" not in columns:  # a store made before retries were keyed
                db.execute("ALTER TABLE pin_failures ADD COLUMN request_key TEXT")
            # Two deliveries of one Twilio request (a retry racing the original) carry
            # the same key: the second insert is ignored, so it is not a second failure.
            db.execute("CREATE UNIQUE INDEX IF NOT EXISTS pin_failures_by_request"
                       " ON pin_failures(request_key)")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=5, isolation_level=None)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.row_factory = sqlite3.Row
            yield db

    # -- accounts -------------------------------------------------------------------

    def upsert_account(self, account: str, balance: str, card_verifier: str,
                       pin_verifier: str) -> None:
        version = verifier_version(card_verifier)
        with self._connect() as db:
            db.execute(
                "INSERT INTO accounts(account, balance, card_verifier, pin_verifier,"
                " lookup_version) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(account) DO UPDATE SET balance=excluded.balance,"
                " card_verifier=excluded.card_verifier, pin_verifier=excluded.pin_verifier,"
                " lookup_version=excluded.lookup_version",
                (account, balance, card_verifier, pin_verifier, version))

    def find_by_card(self, card_verifier: str) -> Account | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM accounts WHERE card_verifier = ?",
                             (card_verifier,)).fetchone()
        return Account(**dict(row)) if row else None

    def lookup_versions(self) -> list[int]:
        """The ``ivr-lookup`` versions that stored verifiers use, newest first."""
        with self._connect() as db:
            rows = db.execute("SELECT DISTINCT lookup_version FROM accounts"
                              " ORDER BY lookup_version DESC").fetchall()
        return [int(r[0]) for r in rows]

    def version_counts(self) -> dict[int, int]:
        with self._connect() as db:
            rows = db.execute("SELECT lookup_version, COUNT(*) FROM accounts"
                              " GROUP BY lookup_version").fetchall()
        return {int(v): int(n) for v, n in rows}

    def replace_verifiers(self, account_id: int, card_verifier: str, pin_verifier: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE accounts SET card_verifier=?, pin_verifier=?, lookup_version=?"
                       " WHERE id=?",
                       (card_verifier, pin_verifier, verifier_version(card_verifier),
                        account_id))

    # -- failed PINs and locks ------------------------------------------------------

    def locked_until(self, account_id: int, now: float) -> float | None:
        with self._connect() as db:
            row = db.execute("SELECT until FROM locks WHERE account_id=? AND until > ?",
                             (account_id, now)).fetchone()
        return float(row[0]) if row else None

    def record_failure(self, account_id: int, now: float, *, window: float, threshold: int,
                       duration: float, request_key: str | None = None) -> bool:
        """Count a wrong PIN; lock the account when ``threshold`` fall within ``window``.
        A failure whose ``request_key`` was already counted is not counted again.
        Returns True when this failure locked it."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM pin_failures WHERE at <= ?", (now - window,))
            inserted = db.execute(
                "INSERT OR IGNORE INTO pin_failures(account_id, at, request_key)"
                " VALUES (?, ?, ?)", (account_id, now, request_key)).rowcount
            if not inserted:
                db.execute("COMMIT")
                return False
            (count,) = db.execute("SELECT COUNT(*) FROM pin_failures WHERE account_id=?",
                                  (account_id,)).fetchone()
            locked = bool(count >= threshold)
            if locked:
                db.execute("INSERT OR REPLACE INTO locks(account_id, until) VALUES (?, ?)",
                           (account_id, now + duration))
                db.execute("DELETE FROM pin_failures WHERE account_id=?", (account_id,))
            db.execute("COMMIT")
        return locked

    def failure_count(self, account_id: int) -> int:
        with self._connect() as db:
            (count,) = db.execute("SELECT COUNT(*) FROM pin_failures WHERE account_id=?",
                                  (account_id,)).fetchone()
        return int(count)

    def clear_failures(self, account_id: int) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM pin_failures WHERE account_id=?", (account_id,))

    # -- idempotency (Twilio retries) -------------------------------------------------

    def remembered(self, key: str, now: float, ttl: float) -> tuple[int, str] | None:
        with self._connect() as db:
            row = db.execute("SELECT status, body FROM idempotency WHERE key=? AND at > ?",
                             (key, now - ttl)).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def remember(self, key: str, status: int, body: str, now: float, ttl: float) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM idempotency WHERE at <= ?", (now - ttl,))
            db.execute("INSERT OR REPLACE INTO idempotency(key, status, body, at)"
                       " VALUES (?, ?, ?, ?)", (key, status, body, now))
