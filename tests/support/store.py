"""The account store as the store tests read it: through its transaction and ledger, as
``decide()`` does, and (for numbers production never asks for) past its interface."""

from __future__ import annotations

from typing import Any

from service.store.accounts import Store
from service.store.ledger import Account, CardState

# The verifiers of the account the store tests enrol (shaped like Transit HMACs).
CARD_V1 = "vault:v1:Y2FyZC12MQ=="
PIN_V1 = "vault:v1:cGluLXYx"

# The accounts table as every store has had it, for stores made by older releases.
OLD_ACCOUNTS = """CREATE TABLE accounts (id INTEGER PRIMARY KEY, account TEXT NOT NULL UNIQUE,
    balance TEXT NOT NULL, card_verifier TEXT NOT NULL UNIQUE,
    pin_verifier TEXT NOT NULL, lookup_version INTEGER NOT NULL);"""


def by_card(store: Store, card: str = CARD_V1) -> Account | None:
    return store.transaction(lambda ledger: ledger.account(card))


def account_id(store: Store, card: str = CARD_V1) -> int:
    account = by_card(store, card)
    assert account is not None
    return account.id


def state_of(store: Store, card: str = CARD_V1) -> CardState:
    aid = account_id(store, card)
    return store.transaction(lambda ledger: ledger.card_state(aid))


def query(store: Store, sql: str) -> list[Any]:
    """Rows of ``sql``, read past the store's interface."""
    return store._db.run(lambda db: list(db.execute(sql).fetchall()))


def count_rows(store: Store, table: str) -> int:
    return int(query(store, f"SELECT COUNT(*) FROM {table}")[0][0])
