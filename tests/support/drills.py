"""What every silent-fault drill needs beside the topology: accounts to call, a load that
spreads over them (right PINs from several numbers, and wrong PINs once the fault is on),
and the checks against the store afterwards.

The store is the ground truth (``call_answers``: every decision that committed, one row
per call and request key). After a drill:

- **lockout exactness**: each wrong-PIN account's ``card_lockout.failures`` equals the wrong
  PINs the store decided for it (its calls' 404 rows: a locked card answers 423 and counts
  nothing), none lost, none counted twice, retries across the cut included;
- **one lookup per call**: no call has two rows (a retry with the same Idempotency-Key is
  answered from the first; a second lookup in a call would be a row of its own).
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field

import psycopg

from service.backend.enrolment import add_account
from service.settings import Settings
from service.webhook.twiml import NOT_FOUND
from tests.support.load import Dial, Placed


@dataclass(frozen=True)
class Account:
    account: str
    balance: str
    card: str
    pin: str

    def right(self, caller: str) -> Dial:
        return Dial((self.card, self.pin), found(self.account, self.balance), caller,
                    self.account)

    def wrong(self, caller: str) -> Dial:
        # Never the right PIN, and not a weak one the caller might be cut off for sooner.
        wrong = f"{(int(self.pin) + 1111) % 10000:04d}"
        return Dial((self.card, wrong), NOT_FOUND, caller, self.account)


def found(account: str, balance: str) -> str:
    return f"Thank you. Your account number is {account} and your balance is {balance}"


def provision(settings: Settings, count: int, *, prefix: str, first_card: int,
              ) -> list[Account]:
    """``count`` accounts named ``prefix`` + a number, with the cards from
    ``first_card`` on (a card is one account's: the store refuses a second), PINs spread."""
    made = []
    for i in range(count):
        account = Account(f"{prefix}{i:04d}", f"{i + 1}.25", f"{first_card + i:04d}",
                          f"{(7351 + 37 * i) % 10000:04d}")
        add_account(settings, account=account.account, balance=account.balance,
                    last4=account.card, pin=account.pin)
        made.append(account)
    return made


def random_number() -> str:
    """A caller number of its own (a wrong PIN from a number that calls once: the caller
    limit never speaks first)."""
    return f"+1555{secrets.randbelow(10**7):07d}"


@dataclass
class Mix:
    """Caller thread ``i < len(right)`` calls its own account with the right PIN from its
    own number; the others, once :attr:`armed` (the fault is on), place wrong PINs on the
    ``wrong`` accounts in turn, each from a fresh number (before that, the demo call)."""

    right: list[Account]
    wrong: list[Account]
    armed: threading.Event = field(default_factory=threading.Event)
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def callers(self) -> int:
        return len(self.right) + 2

    def __call__(self, i: int, n: int) -> Dial:
        if i < len(self.right):
            return self.right[i].right(f"+1555030{i:04d}")
        if not self.armed.is_set():
            return Dial()
        return self.wrong[next(self._turn) % len(self.wrong)].wrong(random_number())


@dataclass(frozen=True)
class StoreCheck:
    counted: dict[str, int]  # account -> card_lockout.failures
    decided: dict[str, int]  # account -> 404 rows of its calls
    rows_per_call: Counter[str]

    @property
    def miscounted(self) -> dict[str, tuple[int, int]]:
        return {a: (self.counted.get(a, 0), n) for a, n in self.decided.items()
                if self.counted.get(a, 0) != n}

    @property
    def calls_with_two_lookups(self) -> list[str]:
        return [sid for sid, n in self.rows_per_call.items() if n > 1]


def check_store(conninfo: str, placed: list[Placed], wrong: list[Account]) -> StoreCheck:
    sids = [p.call_sid for p in placed]
    account_of = {p.call_sid: p.dial.account for p in placed}
    names = [a.account for a in wrong]
    with psycopg.connect(conninfo) as db:
        rows = db.execute("SELECT call_sid, status FROM call_answers"
                          " WHERE call_sid = ANY(%s)", (sids,)).fetchall()
        counted: dict[str, int] = dict(db.execute(
            "SELECT a.account, l.failures FROM accounts a JOIN card_lockout l"
            " ON l.account_id = a.id WHERE a.account = ANY(%s)", (names,)).fetchall())
    decided = {name: 0 for name in names}
    for sid, status in rows:
        if status == 404 and account_of[sid] in decided:
            decided[account_of[sid]] += 1
    return StoreCheck(counted, decided, Counter(sid for sid, _ in rows))
