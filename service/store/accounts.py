"""The account store: SQLite, holding HMAC verifiers and never a digit.

A card is found by ``HMAC(ivr-lookup, "card:" + last4)``; its PIN is checked against
``HMAC(ivr-lookup, "pin:" + last4 + ":" + pin)``, so equal PINs on different cards have
different verifiers. Verifiers carry their key version (``vault:vN:...``); after
``ivr-lookup`` rotates, a record is re-made with the latest version at its next
successful lookup. Failed-PIN counts and locks live here too, so a backend restart or a
new call does not reset them.

sqlite3 blocks; the backend calls this from a thread pool. Each thread keeps one
connection (opening one costs more than the statements a lookup runs), and a lookup
touches the store in two calls: :meth:`Store.find` reads, :meth:`Store.settle` writes
everything the answer implies in one transaction (bench/RESULTS.md).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from service.store.sqlite import ThreadConnections
from service.vault.formats import transit_version

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
-- Every remembered answer first deletes expired keys: without this index that is a scan of the
-- whole table, inside the write lock, on every lookup (bench/RESULTS.md).
CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency(at);
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


@dataclass(frozen=True)
class Account:
    id: int
    account: str
    balance: str
    card_verifier: str
    pin_verifier: str
    lookup_version: int


@dataclass(frozen=True)
class Found:
    """What a lookup needs to know about one card verifier, read in one statement."""
    account: Account
    locked: bool
    has_failures: bool


@dataclass(frozen=True)
class Lockout:
    window: float
    threshold: int
    duration: float


@dataclass(frozen=True)
class Settlement:
    """Everything a lookup's answer writes, applied by :meth:`Store.settle` in one
    transaction: a wrong PIN (``failed_account``), a correct one clearing earlier failures
    (``cleared_account``), a verifier upgrade, and the answer remembered for retries."""
    now: float
    request_key: str | None = None
    answer: tuple[int, str] | None = None  # (status, JSON body) to remember
    answer_ttl: float = 0.0
    failed_account: int | None = None
    lockout: Lockout | None = None
    cleared_account: int | None = None
    upgrade: tuple[int, str, str] | None = None  # (account id, card, PIN verifier)

    def is_empty(self) -> bool:
        return (self.answer is None or self.request_key is None) \
            and self.failed_account is None and self.cleared_account is None \
            and self.upgrade is None


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = ThreadConnections(self.path)
        self._run = self._db.run  # work on this thread's connection, optionally a write
        self._run(_create_schema)  # its own transactions; retried while another writes

    def close(self) -> None:
        """Close every thread's connection (backend shutdown)."""
        self._db.close()

    # -- the lookup's two calls -------------------------------------------------------

    def find(self, card_verifier: str, now: float) -> Found | None:
        """The account with this card verifier, whether it is locked at ``now`` and
        whether it has failed PINs on record."""
        row = self._run(lambda db: db.execute(
            "SELECT a.*, EXISTS(SELECT 1 FROM locks WHERE account_id=a.id AND until > ?)"
            " AS locked, EXISTS(SELECT 1 FROM pin_failures WHERE account_id=a.id)"
            " AS has_failures FROM accounts a WHERE a.card_verifier = ?",
            (now, card_verifier)).fetchone())
        if row is None:
            return None
        fields = dict(row)
        locked, has_failures = bool(fields.pop("locked")), bool(fields.pop("has_failures"))
        return Found(Account(**fields), locked, has_failures)

    def settle(self, s: Settlement) -> bool:
        """Apply a lookup's writes in one transaction. Returns True when this lookup's
        wrong PIN locked the account."""
        def work(db: sqlite3.Connection) -> bool:
            locked = False
            if s.failed_account is not None:
                if s.lockout is None:
                    raise ValueError("a failure needs a lockout policy")
                locked = _record_failure(db, s.failed_account, s.now, s.lockout,
                                         s.request_key)
            if s.cleared_account is not None:
                db.execute("DELETE FROM pin_failures WHERE account_id=?",
                           (s.cleared_account,))
            if s.upgrade is not None:
                _replace_verifiers(db, *s.upgrade)
            if s.answer is not None and s.request_key is not None:
                _remember(db, s.request_key, s.answer, s.now, s.answer_ttl)
            return locked
        return self._run(work, write=True)

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

    def lookup_versions(self) -> list[int]:
        """The ``ivr-lookup`` versions that stored verifiers use, newest first."""
        rows = self._run(lambda db: db.execute(
            "SELECT DISTINCT lookup_version FROM accounts"
            " ORDER BY lookup_version DESC").fetchall())
        return [int(r[0]) for r in rows]

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

    # -- idempotency (Twilio retries) -------------------------------------------------

    def remembered(self, key: str, now: float, ttl: float) -> tuple[int, str] | None:
        row = self._run(lambda db: db.execute(
            "SELECT status, body FROM idempotency WHERE key=? AND at > ?",
            (key, now - ttl)).fetchone())
        return (int(row[0]), str(row[1])) if row else None


# -- statements, run on one thread's connection --------------------------------------------


def _create_schema(db: sqlite3.Connection) -> None:
    db.executescript(_SCHEMA)
    db.executescript(_CANARY_SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(pin_failures)")}
    if "request_key" not in columns:  # a store made before retries were keyed
        db.execute("ALTER TABLE pin_failures ADD COLUMN request_key TEXT")
    # Two deliveries of one Twilio request (a retry racing the original) carry
    # the same key: the second insert is ignored, so it is not a second failure.
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS pin_failures_by_request"
               " ON pin_failures(request_key)")


def _record_failure(db: sqlite3.Connection, account_id: int, now: float, policy: Lockout,
                    request_key: str | None) -> bool:
    db.execute("DELETE FROM pin_failures WHERE at <= ?", (now - policy.window,))
    inserted = db.execute(
        "INSERT OR IGNORE INTO pin_failures(account_id, at, request_key) VALUES (?, ?, ?)",
        (account_id, now, request_key)).rowcount
    if not inserted:
        return False
    (count,) = db.execute("SELECT COUNT(*) FROM pin_failures WHERE account_id=?",
                          (account_id,)).fetchone()
    if count < policy.threshold:
        return False
    db.execute("INSERT OR REPLACE INTO locks(account_id, until) VALUES (?, ?)",
               (account_id, now + policy.duration))
    db.execute("DELETE FROM pin_failures WHERE account_id=?", (account_id,))
    return True


def _replace_verifiers(db: sqlite3.Connection, account_id: int, card_verifier: str,
                       pin_verifier: str) -> None:
    db.execute("UPDATE accounts SET card_verifier=?, pin_verifier=?, lookup_version=?"
               " WHERE id=?",
               (card_verifier, pin_verifier, verifier_version(card_verifier), account_id))


def _remember(db: sqlite3.Connection, key: str, answer: tuple[int, str], now: float,
              ttl: float) -> None:
    db.execute("DELETE FROM idempotency WHERE at <= ?", (now - ttl,))
    db.execute("INSERT OR REPLACE INTO idempotency(key, status, body, at) VALUES (?, ?, ?, ?)",
               (key, *answer, now))
