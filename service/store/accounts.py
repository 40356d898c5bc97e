"""The account store: HMAC verifiers, never a digit, on SQLite or PostgreSQL (``STORE_URL``).

An account is identified first, then verified (docs/security.md, identification; the verifier
scheme is
``service/store/identity.py``'s and docs/security.md's):

- by its account number: ``number_verifier`` = ``HMAC(ivr-lookup, "acctno:" + digits)``,
  unique; or by a caller number registered on it (``caller_registrations``, by
  ``HMAC(ivr-lookup, "callerid:" + number)``; a household's number on several accounts);
- then its card and PIN verifiers, bound to the account by its salt, are compared.

A migrated account (made before schema 3) keeps its unsalted verifiers until its next
successful lookup, and is found by its card alone (``legacy_card``) until an operator sets
its account number. Verifiers carry their key version (``vault:vN:...``); after
``ivr-lookup`` rotates, they are re-made at the latest version at the next successful
lookup. An account's consecutive wrong PINs and its lock, the failed lookups of each caller
number (by its keyed HMAC ``HMAC(ivr-lookup, "caller:" + number)``, never the number) and
each call's remembered answers live here too, so a backend restart or a new call resets
none of them, and on PostgreSQL every backend replica shares them.

The store's calls block; the backend makes them from a thread pool. A lookup's whole
decision (the lock check, the PIN comparison, every write it implies) runs in one
transaction through :meth:`Store.transaction` and a ledger (the contract:
``service/store/ledger.py``): :class:`SqliteLedger` inside SQLite's ``BEGIN IMMEDIATE``,
:class:`PostgresLedger` with row locks. The schema is ``service/store/migrations.py``'s.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from service.formats import transit_version
from service.settings import StoreUrl
from service.store.database import Connection, Database, Engine, store_url
from service.store.identity import matches, new_references
from service.store.ledger import Account, Answer, CardState
from service.store.migrations import legacy_accounts, open_current

T = TypeVar("T")


def verifier_version(verifier: str) -> int:
    """``vault:v3:...`` → 3. Strict, so that something that is not a Transit HMAC is never
    stored as if it were one."""
    version = transit_version(verifier)
    if version is None:
        raise ValueError("not a Transit HMAC")
    return version


class Refusal(StrEnum):
    """Why the store refused to enrol an account (enrolment words each one plainly)."""

    LABEL_EXISTS = "label_exists"
    NUMBER_ENROLLED = "number_enrolled"
    CALLER_SAME_CARD = "caller_same_card"
    NO_ACCOUNT = "no_account"


@dataclass(frozen=True)
class AccountRecord:
    """One account as enrolment writes it: verifiers made by Transit, bound locally; no
    digit. ``card_hmac`` is Transit's HMAC of the card before binding: it is never stored,
    only compared with the accounts already registered on the same caller numbers."""

    account: str
    balance: str
    salt: str
    number_verifier: str
    card_hmac: str
    card_verifier: str
    pin_verifier: str
    callers: tuple[str, ...]  # registered-number verifiers
    pin_hmac: str = ""  # Transit's, before binding, like card_hmac (an import compares it)

    @property
    def version(self) -> int:
        return verifier_version(self.card_verifier)


@dataclass(frozen=True)
class AccountSummary:
    """One account as ``accounts list`` shows it: no verifier, no digit."""

    account: str
    ref: str
    by_number: bool  # identified by an account number
    callers: int  # caller numbers registered on it
    legacy: bool  # still found by its card alone (migrated, no account number yet)
    state: CardState
    last_success: float | None


@dataclass(frozen=True)
class StoredAccount:
    """What an import compares a row with (by its verifiers: the store holds no digit)."""

    account: str
    balance: str
    salt: str
    salted: bool
    number_verifier: str | None
    card_verifier: str
    pin_verifier: str
    callers: frozenset[str]  # registered-number verifiers


class Store:
    """The account store on either engine. Opening it prepares the schema
    (``service/store/migrations.py``: SQLite migrates, PostgreSQL checks);
    ``pool_size`` is how many threads may use it at once (PostgreSQL connections);
    ``serving``: the backend's store, which serves callers (server-side limits)."""

    def __init__(
        self, target: StoreUrl | str | Path, *, pool_size: int = 4, serving: bool = False
    ) -> None:
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

    def transaction(self, work: Callable[[SqliteLedger], T], *, timeout: float | None = None) -> T:
        """Run ``work`` in one transaction: it sees and writes the store while no other
        decision of the same card, call or caller can, in this process or another (SQLite:
        no other decision at all); all its writes commit together, or none if it raises
        (PostgreSQL: StoreUnavailable past ``timeout`` seconds, waits for locks included)."""
        return self._run(lambda db: work(self._ledger(db)), write=True, timeout=timeout)

    def answer(self, call_sid: str, request_key: str, now: float, ttl: float) -> Answer | None:
        """The answer already given to this very request, if any (a read, outside any
        transaction: a retry answered when Vault cannot decide it; otherwise the
        decision's transaction reads the call's answers itself)."""
        row = self._run(
            lambda db: db.execute(
                "SELECT status, body FROM call_answers WHERE call_sid=? AND request_key=?"
                " AND at > ?",
                (call_sid, request_key, now - ttl),
            ).fetchone()
        )
        return (int(row[0]), str(row[1])) if row else None

    # -- accounts -------------------------------------------------------------------

    def add_accounts(self, records: Sequence[AccountRecord]) -> list[Refusal | None]:
        """Enrol ``records`` in one transaction: for each, None (written) or why it was
        refused (nothing of it written). Labels and account numbers are unique; a caller
        number already registered on an account with the same card last-4 is refused (the
        two could not be told apart on the registered-phone path).

        Set-based, a few statements per :data:`BULK_ROWS` records whatever their number
        (PostgreSQL: a statement is a round trip; one statement per row made an import of
        1,000 rows take 25 s on this loaded machine)."""

        def work(db: Connection) -> list[Refusal | None]:
            return [
                refusal
                for start in range(0, len(records), BULK_ROWS)
                for refusal in _add_all(db, self._db.engine, records[start : start + BULK_ROWS])
            ]

        return self._run(work, write=True)

    def set_account_number(self, account: str, number_verifier: str) -> Refusal | None:
        """Give an account its account number, which ends its card-only lookup."""

        def work(db: Connection) -> Refusal | None:
            row = db.execute("SELECT id FROM accounts WHERE account=?", (account,)).fetchone()
            if row is None:
                return Refusal.NO_ACCOUNT
            taken = db.execute(
                "SELECT id FROM accounts WHERE number_verifier=?", (number_verifier,)
            ).fetchone()
            if taken is not None and int(taken[0]) != int(row[0]):
                return Refusal.NUMBER_ENROLLED
            db.execute(
                "UPDATE accounts SET number_verifier=?, number_version=?,"
                " legacy_card=NULL WHERE id=?",
                (number_verifier, verifier_version(number_verifier), row[0]),
            )
            return None

        return self._run(work, write=True)

    def replace_accounts(self, records: Sequence[AccountRecord]) -> list[Refusal | None]:
        """Like :meth:`add_accounts`, for accounts whose labels exist: everything of each
        (balance, salt, verifiers, registrations) replaced, its lockout kept. The same
        refusals, against the other accounts; :attr:`Refusal.NO_ACCOUNT` when the label
        is gone."""

        def work(db: Connection) -> list[Refusal | None]:
            return [_replace(db, record) for record in records]

        return self._run(work, write=True)

    def stored(self, accounts: Sequence[str]) -> dict[str, StoredAccount]:
        """The accounts of these labels that exist, with their verifiers."""
        if not accounts:
            return {}
        engine = self._db.engine

        def work(db: Connection) -> dict[str, StoredAccount]:
            where, values = _member(engine, "account", "text", accounts)
            rows = db.execute(
                "SELECT id, account, balance, salt, salted, number_verifier, card_verifier,"  # noqa: S608
                f" pin_verifier FROM accounts WHERE {where}",
                values,
            ).fetchall()
            ids = [int(row[0]) for row in rows]
            callers: dict[int, set[str]] = {i: set() for i in ids}
            if ids:
                where, values = _member(engine, "account_id", "integer", ids)
                for account_id, caller in db.execute(
                    "SELECT account_id, caller_verifier FROM caller_registrations"  # noqa: S608
                    f" WHERE {where}",
                    values,
                ).fetchall():
                    callers[int(account_id)].add(str(caller))
            return {
                str(r[1]): StoredAccount(
                    str(r[1]),
                    str(r[2]),
                    str(r[3]),
                    bool(r[4]),
                    None if r[5] is None else str(r[5]),
                    str(r[6]),
                    str(r[7]),
                    frozenset(callers[int(r[0])]),
                )
                for r in rows
            }

        return self._run(work)

    def summaries(self, *, page: int = 1000) -> Iterator[AccountSummary]:
        """Every account, in id order, ``page`` rows per query (keyset pagination: each
        page one indexed range read), so that a million accounts stream in bounded
        memory on either engine. Pages are read one after the other, not in one
        snapshot: an account added or removed meanwhile may or may not be listed."""

        def read(db: Connection, after: int) -> list[Any]:
            return db.execute(
                "SELECT a.id, a.account, a.ref, a.number_verifier IS NOT NULL,"
                " a.legacy_card IS NOT NULL,"
                " (SELECT COUNT(*) FROM caller_registrations r WHERE r.account_id=a.id),"
                " l.failures, l.locked_until, l.hard, a.last_success"
                " FROM accounts a LEFT JOIN card_lockout l ON l.account_id=a.id"
                " WHERE a.id > ? ORDER BY a.id LIMIT ?",
                (after, page),
            ).fetchall()

        after = 0
        while True:
            rows = self._run(functools.partial(read, after=after))
            for row in rows:
                state = (
                    CardState()
                    if row[6] is None
                    else CardState(int(row[6]), float(row[7]), bool(row[8]))
                )
                yield AccountSummary(
                    str(row[1]),
                    str(row[2]),
                    bool(row[3]),
                    int(row[5]),
                    bool(row[4]),
                    state,
                    None if row[9] is None else float(row[9]),
                )
            if len(rows) < page:
                return
            after = int(rows[-1][0])

    def set_balance(self, account: str, balance: str) -> bool:
        """False when there is no such account."""
        cursor = self._run(
            lambda db: db.execute(
                "UPDATE accounts SET balance=? WHERE account=?", (balance, account)
            ),
            write=True,
        )
        return bool(cursor.rowcount)

    def set_card(self, account: str, record: AccountRecord) -> Refusal | None:
        """New card and PIN verifiers, bound to ``record``'s new salt: a PIN reset or a
        card change. Refused like an enrolment when a
        caller number registered on it is on another account with the same last-4."""

        def work(db: Connection) -> Refusal | None:
            row = db.execute("SELECT id FROM accounts WHERE account=?", (account,)).fetchone()
            if row is None:
                return Refusal.NO_ACCOUNT
            account_id = int(row[0])
            for (caller,) in db.execute(
                "SELECT caller_verifier FROM caller_registrations WHERE account_id=?", (account_id,)
            ).fetchall():
                if _same_card_elsewhere(db, str(caller), record, account_id):
                    return Refusal.CALLER_SAME_CARD
            # A migrated account still found by its card alone keeps that lookup, on
            # the new card's verifier, until it has an account number.
            db.execute(
                "UPDATE accounts SET salt=?, card_verifier=?, pin_verifier=?,"
                " salted=1, legacy_card=CASE WHEN legacy_card IS NULL THEN NULL"
                " ELSE ? END, lookup_version=? WHERE id=?",
                (
                    record.salt,
                    record.card_verifier,
                    record.pin_verifier,
                    record.card_hmac,
                    record.version,
                    account_id,
                ),
            )
            return None

        return self._run(work, write=True)

    def register_callers(self, account: str, record: AccountRecord) -> Refusal | None:
        """Register ``record.callers`` on the account (``record.card_hmac``: its card, as
        the operator typed it and :meth:`stored` confirmed)."""

        def work(db: Connection) -> Refusal | None:
            row = db.execute("SELECT id FROM accounts WHERE account=?", (account,)).fetchone()
            if row is None:
                return Refusal.NO_ACCOUNT
            account_id = int(row[0])
            for caller in dict.fromkeys(record.callers):
                if _same_card_elsewhere(db, caller, record, account_id):
                    return Refusal.CALLER_SAME_CARD
                db.execute(
                    "INSERT INTO caller_registrations(caller_verifier, account_id,"
                    " lookup_version) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (caller, account_id, verifier_version(caller)),
                )
            return None

        return self._run(work, write=True)

    def unregister_callers(self, account: str, callers: Sequence[str]) -> int | None:
        """Remove these registrations from the account: how many there were, or None
        when there is no such account."""

        def work(db: Connection) -> int | None:
            row = db.execute("SELECT id FROM accounts WHERE account=?", (account,)).fetchone()
            if row is None:
                return None
            return sum(
                db.execute(
                    "DELETE FROM caller_registrations WHERE account_id=? AND caller_verifier=?",
                    (row[0], caller),
                ).rowcount
                for caller in dict.fromkeys(callers)
            )

        return self._run(work, write=True)

    def remove(self, account: str) -> str | None:
        """Delete the account, its registrations and its lockout; its reference (the
        audit line's), or None when there is no such account."""

        def work(db: Connection) -> str | None:
            row = db.execute("SELECT id, ref FROM accounts WHERE account=?", (account,)).fetchone()
            if row is None:
                return None
            # Explicit, not only ON DELETE CASCADE: a SQLite connection without
            # foreign_keys on (another tool's) would leave them behind.
            db.execute("DELETE FROM caller_registrations WHERE account_id=?", (row[0],))
            db.execute("DELETE FROM card_lockout WHERE account_id=?", (row[0],))
            db.execute("DELETE FROM accounts WHERE id=?", (row[0],))
            return str(row[1])

        return self._run(work, write=True)

    def legacy_accounts(self) -> int:
        """How many accounts are still found by their card alone (no account number)."""
        return legacy_accounts(self._db)

    def reference(self, account: str) -> str | None:
        """The account's letters-only reference (audit lines), or None."""
        row = self._run(
            lambda db: db.execute("SELECT ref FROM accounts WHERE account=?", (account,)).fetchone()
        )
        return str(row[0]) if row else None

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

    # -- callers ------------------------------------------------------------------------

    def reset_caller(self, caller: str) -> int:
        """Forget every failed lookup of one caller number (its keyed HMAC at the latest
        ``ivr-lookup`` version, as the lookup counts it): an operator's ``callers reset``.
        Returns how many were forgotten."""

        def work(db: Connection) -> int:
            self._ledger(db).caller_failures(caller, 0.0)  # PostgreSQL: the caller's lock
            return db.execute("DELETE FROM caller_failures WHERE caller=?", (caller,)).rowcount

        return int(self._run(work, write=True))

    def cut_off_callers(self, since: float, limit: int) -> int:
        """How many caller numbers had at least ``limit`` failed lookups after ``since``:
        the numbers cut off now (doctor's row)."""
        (count,) = self._run(
            lambda db: db.execute(
                "SELECT COUNT(*) FROM (SELECT caller FROM caller_failures WHERE at > ?"
                " GROUP BY caller HAVING COUNT(*) >= ?) AS cut",
                (since, limit),
            ).fetchone()
        )
        return int(count)

    def lookup_versions(self) -> list[int]:
        """The ``ivr-lookup`` versions that stored verifiers use, newest first."""
        return self._run(lambda db: self._ledger(db).versions())

    def version_counts(self) -> dict[int, int]:
        """Key version → how many verifier sets use it (an account's card and PIN, its
        account number, each registration)."""
        rows = self._run(
            lambda db: db.execute(
                "SELECT v, COUNT(*) FROM (SELECT lookup_version AS v FROM accounts"
                " UNION ALL SELECT number_version FROM accounts WHERE number_version IS NOT NULL"
                " UNION ALL SELECT lookup_version FROM caller_registrations) AS used GROUP BY v"
            ).fetchall()
        )
        return {int(v): int(n) for v, n in rows}

    def has_account(self, account: str) -> bool:
        row = self._run(
            lambda db: db.execute("SELECT 1 FROM accounts WHERE account=?", (account,)).fetchone()
        )
        return row is not None

    # -- ivr-lookup canaries ----------------------------------------------------------

    def canaries(self) -> dict[int, str]:
        """version → the canary HMAC recorded when that version was first used."""
        rows = self._run(
            lambda db: db.execute("SELECT version, hmac FROM lookup_canaries").fetchall()
        )
        return {int(v): str(h) for v, h in rows}

    def add_canary(self, canary: str, now: float) -> None:
        """Record a version's canary; a canary already recorded is never replaced."""
        self._run(
            lambda db: db.execute(
                "INSERT INTO lookup_canaries(version, hmac, at) VALUES (?, ?, ?)"
                " ON CONFLICT(version) DO NOTHING",
                (verifier_version(canary), canary, now),
            ),
            write=True,
        )


# Records per set-based enrolment step: 11 parameters each in the accounts INSERT, well
# under SQLite's 32,766 and PostgreSQL's 65,535 parameters per statement.
BULK_ROWS = 500


def _marks(count: int) -> str:
    return ", ".join("?" for _ in range(count))


# Many values in one condition. SQLite: one ``?`` each (the statement is parsed in C, in
# microseconds). PostgreSQL: one array parameter, so the statement's text is short and the
# same whatever the count: psycopg converts a statement of more than 4,096 characters or
# 50 parameters anew each time, in Python (with the 500-row VALUES list of 11 columns
# that :func:`_copy_new` replaced: 31% of an import's busy samples under py-spy,
# bench/import_ab.py), and prepares the short one once.
def _member(
    engine: Engine, column: str, kind: str, values: Sequence[Any]
) -> tuple[str, Sequence[Any]]:
    """``column`` is one of ``values`` (``kind``: their PostgreSQL type)."""
    if engine == "postgresql":
        return f"{column} = ANY(?::{kind}[])", [list(values)]
    return f"{column} IN ({_marks(len(values))})", list(values)


# What a new account's row holds, in the order of these columns.
_NEW_ACCOUNT = (
    "account",
    "ref",
    "balance",
    "salt",
    "number_verifier",
    "number_version",
    "card_verifier",
    "pin_verifier",
    "salted",
    "lookup_version",
)
_NEW_REGISTRATION = ("caller_verifier", "account_id", "lookup_version")


def _content(record: AccountRecord) -> tuple[Any, ...]:
    """balance, salt, number_verifier, number_version, card_verifier, pin_verifier."""
    return (
        record.balance,
        record.salt,
        record.number_verifier,
        verifier_version(record.number_verifier),
        record.card_verifier,
        record.pin_verifier,
    )


def _new_accounts(records: Sequence[AccountRecord]) -> Iterator[tuple[Any, ...]]:
    for record, reference in zip(records, new_references(len(records)), strict=True):
        yield (record.account, reference, *_content(record), 1, record.version)


def _registrations(
    records: Sequence[AccountRecord], ids: Sequence[int]
) -> Iterator[tuple[str, int, int]]:
    for record, id_ in zip(records, ids, strict=True):
        for caller in dict.fromkeys(record.callers):
            yield caller, id_, verifier_version(caller)


def _insert_new(db: Connection, records: Sequence[AccountRecord]) -> None:
    """SQLite: two multi-row INSERTs (statements are parsed in C there)."""
    rows = list(_new_accounts(records))
    ids = {
        str(account): int(id_)
        for id_, account in db.execute(
            f"INSERT INTO accounts({', '.join(_NEW_ACCOUNT)}) VALUES "  # noqa: S608
            + ", ".join(f"({_marks(len(_NEW_ACCOUNT))})" for _ in rows)
            + " RETURNING id, account",
            [v for row in rows for v in row],
        ).fetchall()
    }
    registrations = list(_registrations(records, [ids[r.account] for r in records]))
    if registrations:
        db.execute(
            f"INSERT INTO caller_registrations({', '.join(_NEW_REGISTRATION)}) VALUES "  # noqa: S608
            + ", ".join("(?, ?, ?)" for _ in registrations),
            [v for row in registrations for v in row],
        )


def _copy_new(db: Connection, records: Sequence[AccountRecord]) -> None:
    """PostgreSQL: the ids drawn from the accounts' own sequence, then both tables
    written by ``COPY``, whose rows psycopg formats in C. A multi-row INSERT's parameters
    are adapted in Python: as 11 array parameters (``unnest``), 15% of an import's busy
    samples under py-spy, as a 500-row VALUES list 31% (bench/import_ab.py)."""
    from service.store.postgres import PgConnection  # psycopg only on PostgreSQL

    assert isinstance(db, PgConnection)
    ids = [
        int(row[0])
        for row in db.execute(
            "SELECT nextval(pg_get_serial_sequence('accounts', 'id'))"
            " FROM generate_series(1, ?::integer)",
            (len(records),),
        ).fetchall()
    ]
    with db.raw.cursor() as cursor:
        with cursor.copy(f"COPY accounts (id, {', '.join(_NEW_ACCOUNT)}) FROM STDIN") as copy:
            for id_, row in zip(ids, _new_accounts(records), strict=True):
                copy.write_row((id_, *row))
        with cursor.copy(
            f"COPY caller_registrations ({', '.join(_NEW_REGISTRATION)}) FROM STDIN"
        ) as copy:
            for row in _registrations(records, ids):
                copy.write_row(row)


def _add_all(
    db: Connection, engine: Engine, records: Sequence[AccountRecord]
) -> list[Refusal | None]:
    """:meth:`Store.add_accounts` for at most :data:`BULK_ROWS` records: the checks read
    in three statements, the writes in two; each record checked against the store and the
    records before it, as if they were added one by one."""
    if not records:
        return []
    where, values = _member(
        engine, "account", "text", list(dict.fromkeys(r.account for r in records))
    )
    taken_labels = {
        str(row[0])
        for row in db.execute(f"SELECT account FROM accounts WHERE {where}", values).fetchall()  # noqa: S608
    }
    where, values = _member(
        engine, "number_verifier", "text", list(dict.fromkeys(r.number_verifier for r in records))
    )
    taken_numbers = {
        str(row[0])
        for row in db.execute(
            f"SELECT number_verifier FROM accounts WHERE {where}",  # noqa: S608
            values,
        ).fetchall()
    }
    callers = list(dict.fromkeys(c for r in records for c in r.callers))
    registered: dict[str, list[Account]] = {}
    if callers:
        where, values = _member(engine, "r.caller_verifier", "text", callers)
        for row in db.execute(
            f"SELECT {_columns_of('a')}, r.caller_verifier FROM caller_registrations r"  # noqa: S608
            f" JOIN accounts a ON a.id=r.account_id WHERE {where}",
            values,
        ).fetchall():
            registered.setdefault(str(row[-1]), []).append(_account(row[:-1]))
    cards_in_batch: dict[str, set[str]] = {}  # caller → Transit card HMACs added here
    out: list[Refusal | None] = []
    todo: list[AccountRecord] = []
    for record in records:
        refusal = None
        if record.account in taken_labels:
            refusal = Refusal.LABEL_EXISTS
        elif record.number_verifier in taken_numbers:
            refusal = Refusal.NUMBER_ENROLLED
        elif any(
            record.card_hmac in cards_in_batch.get(c, ())
            or any(_same_card(other, record) for other in registered.get(c, ()))
            for c in record.callers
        ):
            refusal = Refusal.CALLER_SAME_CARD
        out.append(refusal)
        if refusal is None:
            taken_labels.add(record.account)
            taken_numbers.add(record.number_verifier)
            for caller in record.callers:
                cards_in_batch.setdefault(caller, set()).add(record.card_hmac)
            todo.append(record)
    if todo:
        (_copy_new if engine == "postgresql" else _insert_new)(db, todo)
    return out


def _same_card(other: Account, record: AccountRecord) -> bool:
    # Compared at the same key version only: an account whose verifiers are behind the
    # latest is not checked (it is re-made at its next lookup).
    return other.lookup_version == record.version and matches(
        other.card_verifier, other.salt, record.card_hmac, salted=other.salted
    )


def _same_card_elsewhere(
    db: Connection, caller: str, record: AccountRecord, account_id: int
) -> bool:
    """Whether an account other than ``account_id`` registered on ``caller`` has the
    card of ``record.card_hmac`` (the two could not be told apart on that number)."""
    rows = db.execute(
        f"SELECT {_columns_of('a')} FROM caller_registrations r"  # noqa: S608
        " JOIN accounts a ON a.id=r.account_id WHERE r.caller_verifier=?",
        (caller,),
    ).fetchall()
    return any(_same_card(other, record) for other in map(_account, rows) if other.id != account_id)


def _replace(db: Connection, record: AccountRecord) -> Refusal | None:
    """An account's content replaced by ``record``'s (an import's ``--update``); its
    lockout kept. The same checks as an enrolment, against the other accounts."""
    row = db.execute("SELECT id FROM accounts WHERE account=?", (record.account,)).fetchone()
    if row is None:
        return Refusal.NO_ACCOUNT
    own = int(row[0])
    taken = db.execute(
        "SELECT id FROM accounts WHERE number_verifier=?", (record.number_verifier,)
    ).fetchone()
    if taken is not None and int(taken[0]) != own:
        return Refusal.NUMBER_ENROLLED
    if any(_same_card_elsewhere(db, caller, record, own) for caller in record.callers):
        return Refusal.CALLER_SAME_CARD
    db.execute(
        "UPDATE accounts SET balance=?, salt=?, number_verifier=?,"
        " number_version=?, card_verifier=?, pin_verifier=?, salted=1,"
        " legacy_card=NULL, lookup_version=? WHERE id=?",
        (*_content(record), record.version, own),
    )
    db.execute("DELETE FROM caller_registrations WHERE account_id=?", (own,))
    _register(db, own, record.callers)
    return None


def _register(db: Connection, account_id: int, callers: Sequence[str]) -> None:
    for caller in dict.fromkeys(callers):
        db.execute(
            "INSERT INTO caller_registrations(caller_verifier, account_id,"
            " lookup_version) VALUES (?, ?, ?)",
            (caller, account_id, verifier_version(caller)),
        )


# Statements below interpolate nothing but this module's constants (a column list, a
# table name, ROW_LOCK): values always go in as parameters (hence the noqa: S608).
_COLUMNS = (
    "id",
    "account",
    "ref",
    "balance",
    "salt",
    "card_verifier",
    "pin_verifier",
    "salted",
    "legacy_card",
    "lookup_version",
    "number_version",
)


def _columns_of(alias: str) -> str:
    return ", ".join(f"{alias}.{column}" for column in _COLUMNS)


_ACCOUNT = ", ".join(_COLUMNS)


def _account(row: Sequence[Any]) -> Account:
    (id_, account, ref, balance, salt, card_v, pin_v, salted, legacy, version, number_version) = row
    return Account(
        int(id_),
        str(account),
        str(ref),
        str(balance),
        str(salt),
        str(card_v),
        str(pin_v),
        bool(salted),
        None if legacy is None else str(legacy),
        int(version),
        None if number_version is None else int(number_version),
    )


class SqliteLedger:
    """:class:`~service.store.ledger.Ledger` on one connection inside ``BEGIN IMMEDIATE``:
    the database's one write lock is already held, so reads need no row locks. The SQL is
    both engines'; :class:`PostgresLedger` adds the locks."""

    ROW_LOCK = ""  # appended to a SELECT of the row a decision goes on to write
    ROW_LOCK_OF_ACCOUNT = ""  # the same, in a join: only the account row

    def __init__(self, db: Connection) -> None:
        self._db = db

    def answers(self, call_sid: str) -> dict[str, Answer]:
        rows = self._db.execute(
            "SELECT request_key, status, body FROM call_answers WHERE call_sid=?", (call_sid,)
        ).fetchall()
        return {str(key): (int(status), str(body)) for key, status, body in rows}

    def remember(
        self, call_sid: str, request_key: str, answer: Answer, now: float, ttl: float
    ) -> None:
        self._sweep("call_answers", now - ttl)
        self._db.execute(
            "INSERT INTO call_answers(call_sid, request_key, status, body, at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT(call_sid, request_key)"
            " DO UPDATE SET status=excluded.status, body=excluded.body,"
            " at=excluded.at",
            (call_sid, request_key, *answer, now),
        )

    def _one(self, column: str, value: str) -> Account | None:
        row = self._db.execute(
            f"SELECT {_ACCOUNT} FROM accounts"  # noqa: S608
            f" WHERE {column}=?{self.ROW_LOCK}",
            (value,),
        ).fetchone()
        return _account(row) if row else None

    def account_by_number(self, number_verifier: str) -> Account | None:
        return self._one("number_verifier", number_verifier)

    def legacy_account(self, card_verifier: str) -> Account | None:
        return self._one("legacy_card", card_verifier)

    def accounts_by_caller(self, caller_verifier: str) -> list[tuple[Account, int]]:
        rows = self._db.execute(
            f"SELECT {_columns_of('a')}, r.lookup_version FROM caller_registrations r"  # noqa: S608
            " JOIN accounts a ON a.id=r.account_id WHERE r.caller_verifier=?"
            f" ORDER BY a.id{self.ROW_LOCK_OF_ACCOUNT}",
            (caller_verifier,),
        ).fetchall()
        return [(_account(row[:-1]), int(row[-1])) for row in rows]

    def account_id(self, account: str) -> int | None:
        """The id of the account of that label, locked like :meth:`account_by_number`."""
        row = self._db.execute(
            f"SELECT id FROM accounts WHERE account=?{self.ROW_LOCK}",  # noqa: S608
            (account,),
        ).fetchone()
        return int(row[0]) if row else None

    def versions(self) -> list[int]:
        rows = self._db.execute(
            "SELECT DISTINCT lookup_version FROM accounts UNION"
            " SELECT DISTINCT number_version FROM accounts WHERE number_version IS NOT NULL"
            " UNION SELECT DISTINCT lookup_version FROM caller_registrations"
            " ORDER BY 1 DESC"
        ).fetchall()
        return [int(r[0]) for r in rows]

    def card_state(self, account_id: int) -> CardState:
        row = self._db.execute(
            "SELECT failures, locked_until, hard FROM card_lockout WHERE account_id=?",
            (account_id,),
        ).fetchone()
        if row is None:
            return CardState()
        return CardState(int(row[0]), float(row[1]), bool(row[2]))

    def set_card_state(self, account_id: int, state: CardState) -> None:
        if state == CardState():
            self._db.execute("DELETE FROM card_lockout WHERE account_id=?", (account_id,))
            return
        self._db.execute(
            "INSERT INTO card_lockout(account_id, failures, locked_until, hard)"
            " VALUES (?, ?, ?, ?) ON CONFLICT(account_id) DO UPDATE SET"
            " failures=excluded.failures, locked_until=excluded.locked_until,"
            " hard=excluded.hard",
            (account_id, state.failures, state.locked_until, int(state.hard)),
        )

    def succeeded(self, account_id: int, now: float) -> None:
        self._db.execute("UPDATE accounts SET last_success=? WHERE id=?", (now, account_id))

    def replace_verifiers(
        self, account_id: int, card_verifier: str, pin_verifier: str, legacy_card: str | None
    ) -> None:
        self._db.execute(
            "UPDATE accounts SET card_verifier=?, pin_verifier=?, salted=1,"
            " legacy_card=?, lookup_version=? WHERE id=?",
            (card_verifier, pin_verifier, legacy_card, verifier_version(card_verifier), account_id),
        )

    def replace_number(self, account_id: int, number_verifier: str) -> None:
        self._db.execute(
            "UPDATE accounts SET number_verifier=?, number_version=? WHERE id=?",
            (number_verifier, verifier_version(number_verifier), account_id),
        )

    def replace_registration(self, account_id: int, old: str, new: str) -> None:
        self._db.execute(
            "UPDATE caller_registrations SET caller_verifier=?,"
            " lookup_version=? WHERE caller_verifier=? AND account_id=?",
            (new, verifier_version(new), old, account_id),
        )

    def caller_failures(self, caller: str, since: float) -> int:
        (count,) = self._db.execute(
            "SELECT COUNT(*) FROM caller_failures WHERE caller=? AND at > ?", (caller, since)
        ).fetchone()
        return int(count)

    def add_caller_failure(self, caller: str, now: float, window: float) -> None:
        self._sweep("caller_failures", now - window)
        self._db.execute("INSERT INTO caller_failures(caller, at) VALUES (?, ?)", (caller, now))

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
    3. the account (:meth:`account_by_number`, :meth:`accounts_by_caller` in id order,
       :meth:`legacy_account`): ``SELECT … FOR UPDATE`` on the account row, which always
       exists, instead of the lockout row, which may not yet; ``unlock`` takes the same
       row. A decision locks the accounts of one identification only (the card-only
       lookup runs when identification found none), so two never wait for each other.

    Each statement at READ COMMITTED reads what committed before it started, so what is
    read after a lock is what the previous holder wrote. The sweeps of expired rows skip
    rows another transaction is deleting (``SKIP LOCKED``): they never wait, and never
    make unrelated lookups wait for one another.

    Why not SERIALIZABLE: a burst on one card would make every transaction but one fail
    with a serialization error and retry (measured: docs/deployment.md); the locks make
    them queue instead, each one decided exactly once.
    """

    ROW_LOCK = " FOR UPDATE"
    ROW_LOCK_OF_ACCOUNT = " FOR UPDATE OF a"

    def answers(self, call_sid: str) -> dict[str, Answer]:
        self._lock("call", call_sid)
        return super().answers(call_sid)

    def caller_failures(self, caller: str, since: float) -> int:
        self._lock("caller", caller)
        return super().caller_failures(caller, since)

    def _lock(self, kind: str, key: str) -> None:
        # A 64-bit hash of the key: two keys that collide only wait for each other.
        self._db.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (f"{kind}:{key}",))

    def _sweep(self, table: str, before: float) -> None:
        self._db.execute(
            f"DELETE FROM {table} WHERE ctid IN"  # noqa: S608
            f" (SELECT ctid FROM {table} WHERE at <= ? FOR UPDATE SKIP LOCKED)",
            (before,),
        )
