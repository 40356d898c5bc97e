"""The account store: HMAC verifiers, never a digit, on SQLite or PostgreSQL (``STORE_URL``).

A card is found by ``HMAC(ivr-lookup, "card:" + last4)``; its PIN is checked against
``HMAC(ivr-lookup, "pin:" + last4 + ":" + pin)``, so equal PINs on different cards have
different verifiers. Verifiers carry their key version (``vault:vN:...``); after
``ivr-lookup`` rotates, a record is re-made with the latest version at its next
successful lookup. A card's consecutive wrong PINs and its lock, the failed lookups of
each caller number (by its keyed HMAC ``HMAC(ivr-lookup, "caller:" + number)``, never the
number) and each call's remembered answers live here too, so a backend restart or a new
call resets none of them, and on PostgreSQL every backend replica shares them.

The store's calls block; the backend makes them from a thread pool. A lookup's whole
decision (the lock check, the PIN comparison, every write it implies) runs in one
transaction through :meth:`Store.transaction` and a ledger (the contract:
``service/store/ledger.py``): :class:`SqliteLedger` inside SQLite's ``BEGIN IMMEDIATE``,
:class:`PostgresLedger` with row locks. The schema is ``service/store/migrations.py``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from service.settings import StoreUrl
from service.store.database import Connection, Database, store_url
from service.store.ledger import Account, Answer, CardState
from service.store.migrations import open_current
from service.vault.formats import transit_version

T = TypeVar("T")


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
    """The account store on either engine. Opening it prepares the schema
    (``service/store/migrations.py``: SQLite migrates, PostgreSQL checks);
    ``pool_size`` is how many threads may use it at once (PostgreSQL connections);
    ``serving``: the backend's store, which serves callers (server-side limits)."""

    def __init__(self, target: StoreUrl | str | Path, *, pool_size: int = 4,
                 serving: bool = False) -> None:
        self.url = store_url(target)
        self._db: Database = open_current(self.url, pool_size=pool_size, serving=serving)
        self._run = self._db.run  # work on one connection, optionally one transaction
        self._ledger = PostgresLedger if self._db.engine == "postgresql" else SqliteLedger

    @property
    def path(self) -> Path:
        """The SQLite file (tests and tools that read it directly)."""
        return Path(self.url.path)

    def close(self) -> None:
        """Close every connection (backend shutdown)."""
        self._db.close()

    # -- the lookup ---------------------------------------------------------------------

    def transaction(self, work: Callable[[SqliteLedger], T], *,
                    timeout: float | None = None) -> T:
        """Run ``work`` in one transaction: it sees and writes the store while no other
        decision of the same card, call or caller can, in this process or another (SQLite:
        no other decision at all); all its writes commit together, or none if it raises
        (PostgreSQL: StoreUnavailable past ``timeout`` seconds, waits for locks included)."""
        return self._run(lambda db: work(self._ledger(db)), write=True, timeout=timeout)

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
        def work(db: Connection) -> CardState | None:
            ledger = self._ledger(db)
            account_id = ledger.account_id(account)
            if account_id is None:
                return None
            before = ledger.card_state(account_id)
            db.execute("DELETE FROM card_lockout WHERE account_id=?", (account_id,))
            return before
        return self._run(work, write=True)

    def lookup_versions(self) -> list[int]:
        """The ``ivr-lookup`` versions that stored verifiers use, newest first."""
        return self._run(lambda db: self._ledger(db).versions())

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
            "INSERT INTO lookup_canaries(version, hmac, at) VALUES (?, ?, ?)"
            " ON CONFLICT(version) DO NOTHING",
            (verifier_version(canary), canary, now)), write=True)


# Statements below interpolate nothing but this module's constants (a column list, a
# table name, ROW_LOCK): values always go in as parameters (hence the noqa: S608).
_ACCOUNT = "id, account, balance, card_verifier, pin_verifier, lookup_version"


class SqliteLedger:
    """:class:`~service.store.ledger.Ledger` on one connection inside ``BEGIN IMMEDIATE``:
    the database's one write lock is already held, so reads need no row locks. The SQL is
    both engines'; :class:`PostgresLedger` adds the locks."""

    ROW_LOCK = ""  # appended to a SELECT of the row a decision goes on to write

    def __init__(self, db: Connection) -> None:
        self._db = db

    def answers(self, call_sid: str) -> dict[str, Answer]:
        rows = self._db.execute("SELECT request_key, status, body FROM call_answers"
                                " WHERE call_sid=?", (call_sid,)).fetchall()
        return {str(key): (int(status), str(body)) for key, status, body in rows}

    def remember(self, call_sid: str, request_key: str, answer: Answer, now: float,
                 ttl: float) -> None:
        self._sweep("call_answers", now - ttl)
        self._db.execute("INSERT INTO call_answers(call_sid, request_key, status, body, at)"
                         " VALUES (?, ?, ?, ?, ?) ON CONFLICT(call_sid, request_key)"
                         " DO UPDATE SET status=excluded.status, body=excluded.body,"
                         " at=excluded.at", (call_sid, request_key, *answer, now))

    def account(self, card_verifier: str) -> Account | None:
        row = self._db.execute(f"SELECT {_ACCOUNT} FROM accounts"  # noqa: S608
                               f" WHERE card_verifier=?{self.ROW_LOCK}",
                               (card_verifier,)).fetchone()
        return Account(*row) if row else None

    def account_id(self, account: str) -> int | None:
        """The id of the account of that name, locked like :meth:`account`."""
        row = self._db.execute(f"SELECT id FROM accounts WHERE account=?{self.ROW_LOCK}",  # noqa: S608
                               (account,)).fetchone()
        return int(row[0]) if row else None

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
        self._db.execute("INSERT INTO card_lockout(account_id, failures, locked_until, hard)"
                         " VALUES (?, ?, ?, ?) ON CONFLICT(account_id) DO UPDATE SET"
                         " failures=excluded.failures, locked_until=excluded.locked_until,"
                         " hard=excluded.hard",
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
        self._sweep("caller_failures", now - window)
        self._db.execute("INSERT INTO caller_failures(caller, at) VALUES (?, ?)",
                         (caller, now))

    def _sweep(self, table: str, before: float) -> None:
        """Forget ``table``'s rows from ``before`` or earlier."""
        self._db.execute(f"DELETE FROM {table} WHERE at <= ?", (before,))  # noqa: S608


class PostgresLedger(SqliteLedger):
    """The same decisions on PostgreSQL, where transactions run side by side (READ
    COMMITTED) and each takes the locks of what it decides on, always in this order, so
    that two never wait for each other:

    1. the call (:meth:`answers`): a transaction-scoped advisory lock on the CallSid,
       since the call may have no row yet. A Twilio retry reaching another backend, or a
       second lookup in the call, waits, then sees the first one's answer;
    2. the caller (:meth:`caller_failures`): an advisory lock on the number's HMAC, so
       that a caller's concurrent failures are counted one after the other;
    3. the card (:meth:`account`): ``SELECT … FOR UPDATE`` on the account row, which
       always exists, instead of the lockout row, which may not yet; ``unlock`` and
       ``upsert_account`` take the same row.

    Each statement at READ COMMITTED reads what committed before it started, so what is
    read after a lock is what the previous holder wrote. The sweeps of expired rows skip
    rows another transaction is deleting (``SKIP LOCKED``): they never wait, and never
    make unrelated lookups wait for one another.

    Why not SERIALIZABLE: a burst on one card would make every transaction but one fail
    with a serialization error and retry (measured: docs/deployment.md); the locks make
    them queue instead, each one decided exactly once.
    """

    ROW_LOCK = " FOR UPDATE"

    def answers(self, call_sid: str) -> dict[str, Answer]:
        self._lock("call", call_sid)
        return super().answers(call_sid)

    def caller_failures(self, caller: str, since: float) -> int:
        self._lock("caller", caller)
        return super().caller_failures(caller, since)

    def _lock(self, kind: str, key: str) -> None:
        # A 64-bit hash of the key: two keys that collide only wait for each other.
        self._db.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))",
                         (f"{kind}:{key}",))

    def _sweep(self, table: str, before: float) -> None:
        self._db.execute(f"DELETE FROM {table} WHERE ctid IN"  # noqa: S608
                         f" (SELECT ctid FROM {table} WHERE at <= ? FOR UPDATE SKIP LOCKED)",
                         (before,))
