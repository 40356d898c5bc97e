"""What a lookup's decision may read and write inside its one transaction: the contract
between the decision (``service/backend/decision.py``, plain Python) and a store's SQL.

The decision runs inside one write transaction that the store opens, passing it a
:class:`Ledger`; everything it reads there is current and everything it writes commits
together or not at all. No Vault call happens inside it (the lookup makes them before).

- SQLite (``service/store/accounts.py``, ``SqliteLedger``): ``BEGIN IMMEDIATE`` takes the
  database's one write lock, so decisions are simply one after the other, across threads
  and processes.
- PostgreSQL (``PostgresLedger``), shared by backend replicas: the same methods, each
  taking the lock of what it reads before reading it: ``answers()`` an advisory lock on
  the call, ``caller_failures()`` one on the caller, ``account()`` ``SELECT … FOR UPDATE``
  on the account rows (serialising one account's decisions). So the decision must read the
  call's answers, then the caller's failures, then the account(s), before the card's state,
  as :func:`~service.backend.decision.decide` does; it does not change otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Account:
    """An account as a decision sees it: its label (``account``, read back to the caller),
    its letters-only ``ref`` (audit lines), and its verifiers (never digits)."""

    id: int
    account: str
    ref: str
    balance: str
    salt: str
    card_verifier: str
    pin_verifier: str
    salted: bool  # False: verifiers carried over from before schema 3, not yet re-made
    legacy_card: str | None  # the card-only lookup's verifier, until an account number
    lookup_version: int  # of card_verifier, pin_verifier and legacy_card
    number_version: int | None  # of the account-number verifier, if it has one


@dataclass(frozen=True)
class CardState:
    """A card's lockout state: consecutive wrong PINs, and the lock they set.
    ``locked_until`` is a Unix time (0: none); ``hard`` holds until an operator unlocks."""

    failures: int = 0
    locked_until: float = 0.0
    hard: bool = False

    def locked(self, now: float) -> bool:
        return self.hard or now < self.locked_until


# (HTTP status, JSON body) of an answer given, kept for a retry of the same request.
Answer = tuple[int, str]


class Ledger(Protocol):
    """One transaction's view of the store. Methods are one or two statements each."""

    def answers(self, call_sid: str) -> dict[str, Answer]:
        """The answers this call's lookups were given, by request key."""
        ...

    def remember(
        self, call_sid: str, request_key: str, answer: Answer, now: float, ttl: float
    ) -> None:
        """Keep ``answer`` for this call and key (and forget any older than ``ttl``)."""
        ...

    def account_by_number(self, number_verifier: str) -> Account | None:
        """The account with this account-number verifier, locked for this transaction."""
        ...

    def accounts_by_caller(self, caller_verifier: str) -> list[tuple[Account, int]]:
        """The accounts this caller number is registered on, each with the key version of
        its registration, locked (in id order)."""
        ...

    def legacy_account(self, card_verifier: str) -> Account | None:
        """The account a card-only lookup finds (a migrated account with no account
        number yet), locked."""
        ...

    def versions(self) -> list[int]:
        """The ``ivr-lookup`` versions stored verifiers use, newest first."""
        ...

    def card_state(self, account_id: int) -> CardState: ...

    def set_card_state(self, account_id: int, state: CardState) -> None: ...

    def succeeded(self, account_id: int, now: float) -> None:
        """Record the account's last successful lookup (``accounts list``)."""

    def replace_verifiers(
        self, account_id: int, card_verifier: str, pin_verifier: str, legacy_card: str | None
    ) -> None:
        """Re-made, bound to the account's salt, at the latest key version."""
        ...

    def replace_number(self, account_id: int, number_verifier: str) -> None: ...

    def replace_registration(self, account_id: int, old: str, new: str) -> None: ...

    def caller_failures(self, caller: str, since: float) -> int:
        """How many failed lookups this caller (its keyed HMAC) had after ``since``."""
        ...

    def add_caller_failure(self, caller: str, now: float, window: float) -> None:
        """Count one failed lookup (and forget any older than ``window``)."""
        ...
