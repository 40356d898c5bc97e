"""The account store as the store tests read it: through its transaction and ledger, as
``decide()`` does, and (for numbers production never asks for) past its interface."""

from __future__ import annotations

from typing import Any

from service.store.accounts import AccountRecord, Refusal, Store
from service.store.identity import bind, new_salt
from service.store.ledger import Account, CardState

# Transit's HMACs of the entries of the account the store tests enrol (shaped like Transit
# HMACs): its account number, card and PIN, and a caller number registered on it.
NUMBER_V1 = "vault:v1:bnVtYmVyLXYx"
CARD_V1 = "vault:v1:Y2FyZC12MQ=="
PIN_V1 = "vault:v1:cGluLXYx"
CALLER_ID_V1 = "vault:v1:Y2FsbGVyaWQtdjE="

# The accounts table as every store before schema 3 had it, for stores made by older
# releases.
OLD_ACCOUNTS = """CREATE TABLE accounts (id INTEGER PRIMARY KEY, account TEXT NOT NULL UNIQUE,
    balance TEXT NOT NULL, card_verifier TEXT NOT NULL UNIQUE,
    pin_verifier TEXT NOT NULL, lookup_version INTEGER NOT NULL);"""
OLD_LOCKOUT = """CREATE TABLE card_lockout (account_id INTEGER PRIMARY KEY REFERENCES
    accounts(id) ON DELETE CASCADE, failures INTEGER NOT NULL,
    locked_until REAL NOT NULL, hard INTEGER NOT NULL);"""


def record(
    account: str = "AC12345678",
    balance: str = "12.55",
    *,
    number: str = NUMBER_V1,
    card: str = CARD_V1,
    pin: str = PIN_V1,
    callers: tuple[str, ...] = (),
    salt: str | None = None,
) -> AccountRecord:
    """What enrolment would write for Transit's HMACs ``card`` and ``pin``."""
    salt = salt or new_salt()
    return AccountRecord(
        account, balance, salt, number, card, bind(salt, card), bind(salt, pin), callers
    )


def put(store: Store, account: str = "AC12345678", balance: str = "12.55", **kwargs: Any) -> None:
    (refusal,) = store.add_accounts([record(account, balance, **kwargs)])
    assert refusal is None, refusal


def refused(store: Store, **kwargs: Any) -> Refusal | None:
    (refusal,) = store.add_accounts([record(**kwargs)])
    return refusal


def by_number(store: Store, number: str = NUMBER_V1) -> Account | None:
    return store.transaction(lambda ledger: ledger.account_by_number(number))


def account_id(store: Store, number: str = NUMBER_V1) -> int:
    account = by_number(store, number)
    assert account is not None
    return account.id


def state_of(store: Store, number: str = NUMBER_V1) -> CardState:
    aid = account_id(store, number)
    return store.transaction(lambda ledger: ledger.card_state(aid))


def query(store: Store, sql: str) -> list[Any]:
    """Rows of ``sql``, read past the store's interface."""
    return store._db.run(lambda db: list(db.execute(sql).fetchall()))


def count_rows(store: Store, table: str) -> int:
    return int(query(store, f"SELECT COUNT(*) FROM {table}")[0][0])
