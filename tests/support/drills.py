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
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from service.backend.enrolment import Enrolment, add_account
from service.settings import Settings
from service.webhook.twiml import FOUND, NOT_FOUND
from tests.support.load import CallLoad, Dial, Failure, Figures, Placed
from tests.support.waiting import wait_until


@dataclass(frozen=True)
class Account:
    account: str
    balance: str
    number: str  # the account number its callers type first
    card: str
    pin: str

    def right(self, caller: str) -> Dial:
        return Dial(
            (self.card, self.pin),
            FOUND.format(account=self.account, balance=self.balance),
            caller,
            self.account,
            self.number,
        )

    def wrong(self, caller: str) -> Dial:
        # Never the right PIN, and not a weak one the caller might be cut off for sooner.
        wrong = f"{(int(self.pin) + 1111) % 10000:04d}"
        return Dial((self.card, wrong), NOT_FOUND, caller, self.account, self.number)


def provision(
    settings: Settings,
    count: int,
    *,
    prefix: str,
    first_card: int,
) -> list[Account]:
    """``count`` accounts named ``prefix`` + a number, with the cards from
    ``first_card`` on, each with an account number of its own, PINs spread."""
    made = []
    for i in range(count):
        number = f"{50_000_000 + first_card + i:08d}"  # unique: the cards are
        account = Account(
            f"{prefix}{i:04d}",
            f"{i + 1}.25",
            number,
            f"{first_card + i:04d}",
            f"{(7351 + 37 * i) % 10000:04d}",
        )
        add_account(
            settings,
            Enrolment(account.account, account.balance, account.number, account.card, account.pin),
        )
        made.append(account)
    return made


def random_number() -> str:
    """A caller number of its own (a wrong PIN from a number that calls once: the caller
    limit never speaks first)."""
    return f"+1555{secrets.randbelow(10**7):07d}"


@dataclass
class Mix:
    """Caller thread ``i < len(right)`` calls its own account with the right PIN from its
    own number; the next :attr:`SHARED` all call the demo account from the demo number
    (one account and one number for several callers: their lookups queue on the same
    locks); the last two, once :attr:`armed` (the fault is on), place wrong PINs on the
    ``wrong`` accounts in turn, each from a fresh number (before that, the demo call)."""

    SHARED = 2

    right: list[Account]
    wrong: list[Account]
    armed: threading.Event = field(default_factory=threading.Event)
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def callers(self) -> int:
        return len(self.right) + self.SHARED + 2

    def __call__(self, i: int, n: int) -> Dial:
        if i < len(self.right):
            return self.right[i].right(f"+1555030{i:04d}")
        if i < len(self.right) + self.SHARED or not self.armed.is_set():
            return Dial()
        return self.wrong[next(self._turn) % len(self.wrong)].wrong(random_number())


@dataclass(frozen=True)
class StoreCheck:
    counted: dict[str, int]  # account -> card_lockout.failures
    decided: dict[str, int]  # account -> 404 rows of its calls
    rows_per_call: Counter[str]

    @property
    def miscounted(self) -> dict[str, tuple[int, int]]:
        return {
            a: (self.counted.get(a, 0), n)
            for a, n in self.decided.items()
            if self.counted.get(a, 0) != n
        }

    @property
    def calls_with_two_lookups(self) -> list[str]:
        return [sid for sid, n in self.rows_per_call.items() if n > 1]


def check_store(conninfo: str, placed: list[Placed], wrong: list[Account]) -> StoreCheck:
    sids = [p.call_sid for p in placed]
    account_of = {p.call_sid: p.dial.account for p in placed}
    names = [a.account for a in wrong]
    with psycopg.connect(conninfo) as db:
        rows = db.execute(
            "SELECT call_sid, status FROM call_answers WHERE call_sid = ANY(%s)", (sids,)
        ).fetchall()
        counted: dict[str, int] = dict(
            db.execute(
                "SELECT a.account, l.failures FROM accounts a JOIN card_lockout l"
                " ON l.account_id = a.id WHERE a.account = ANY(%s)",
                (names,),
            ).fetchall()
        )
    decided = {name: 0 for name in names}
    for sid, status in rows:
        if status == 404 and account_of[sid] in decided:
            decided[account_of[sid]] += 1
    return StoreCheck(counted, decided, Counter(sid for sid, _ in rows))


# -- one drill: a fault under the mixed load, held, healed -------------------------------

Moment = Callable[[float, float], float | None]
"""``moment(since, since_wall)``: seconds from ``since`` (monotonic; ``since_wall`` the same
moment on the wall clock, for log lines) to what it waits for; None: not yet."""

RIGHT_CALLERS = 8  # each from its own number, to its own account; 2 more place wrong PINs
WRONG_ACCOUNTS = 24  # the wrong PINs' accounts: up to LOCKOUT_THRESHOLD counted on each
WARM_S = 3.0  # load before the fault
AFTER_S = 3.0  # load after recovery
RECOVER_WITHIN_S = 60.0
# No webhook request may take past REQUEST_BUDGET (2.5 s); what the load measures includes
# Caddy and the client on this loaded machine, hence the margin up to the 3 s ceiling.
MAX_REQUEST_MS = 3000


@dataclass
class Drilled:
    """What a drill measured."""

    figures: Figures
    failures: list[Failure]
    store: StoreCheck
    started: float  # monotonic, when the fault began
    latencies: list[tuple[float, float]]  # (sent at, seconds) of every request
    detect: float | None
    recover: float | None

    @property
    def over_budget(self) -> list[tuple[float, int]]:
        """(sent at, from the fault's start; ms) of the requests past MAX_REQUEST_MS,
        in the whole run."""
        return [
            (round(t - self.started, 2), round(s * 1000))
            for t, s in self.latencies
            if s * 1000 > MAX_REQUEST_MS
        ]

    def summary(self) -> dict[str, Any]:
        f = self.figures
        return {
            "calls": f.calls,
            "failed": f.failed,
            "requests": f.requests,
            "p50_ms": round(f.p50_ms, 1),
            "p99_ms": round(f.p99_ms, 1),
            "max_ms": round(f.max_ms),
            "time_to_detect": None if self.detect is None else round(self.detect, 2),
            "time_to_recover": None if self.recover is None else round(self.recover, 2),
            "wrong_pins_decided": sum(self.store.decided.values()),
            "miscounted": len(self.store.miscounted),
            "two_lookups": len(self.store.calls_with_two_lookups),
        }


def _first(moment: Moment, seen: list[float]) -> Moment:
    def kept(since: float, wall: float) -> float | None:
        value = moment(since, wall)
        if value is not None and not seen:
            seen.append(value)
        return value

    return kept


def fault_drill(
    *,
    url: str,
    auth_token: str,
    settings: Settings,
    store_url: str,
    cards_from: int,
    prefix: str,
    begin: Callable[[], None],
    end: Callable[[], None],
    hold_s: float,
    detected: Moment | None,
    recovered: Moment | None,
) -> Drilled:
    """Under the mixed load (:class:`Mix`, on accounts made for this drill), ``begin``
    the fault, hold it ``hold_s`` (having waited for ``detected``: the first request
    served around the silent piece), ``end`` it, wait for ``recovered`` (the piece serving
    again), AFTER_S more; then the store is checked. Figures over every call of the run:
    one that started just before the fault may be the one it breaks."""
    mix = Mix(
        provision(settings, RIGHT_CALLERS, prefix=f"{prefix}1", first_card=cards_from),
        provision(
            settings, WRONG_ACCOUNTS, prefix=f"{prefix}2", first_card=cards_from + RIGHT_CALLERS
        ),
    )
    detect: list[float] = []
    recover: list[float] = []
    with CallLoad(url, auth_token, callers=mix.callers, dials=mix) as load:
        loaded = load.mark()
        time.sleep(WARM_S)
        started, wall = load.mark(), time.time()
        mix.armed.set()
        begin()
        try:
            if detected is not None:
                wait_until(
                    lambda: _first(detected, detect)(started, wall) is not None,
                    what="served around the fault",
                    since=started,
                    timeout=hold_s,
                )
            time.sleep(max(0.0, started + hold_s - time.monotonic()))
        finally:
            end()
        healed, healed_wall = load.mark(), time.time()
        if recovered is not None:
            wait_until(
                lambda: _first(recovered, recover)(healed, healed_wall) is not None,
                what="serving again",
                since=healed,
                timeout=RECOVER_WITHIN_S,
            )
        time.sleep(AFTER_S)
        figures = load.figures(loaded)
    store = check_store(store_url, load.placed, mix.wrong)
    return Drilled(
        figures,
        list(load.failures),
        store,
        started,
        list(load.latencies),
        detect[0] if detect else None,
        recover[0] if recover else None,
    )


def assert_store_exact(drilled: Drilled) -> None:
    """The wrong PINs were decided during the drill, and each one counted exactly once;
    no call had two lookups."""
    assert sum(drilled.store.decided.values()) >= 10, drilled.store.decided
    assert drilled.store.miscounted == {}
    assert drilled.store.calls_with_two_lookups == []


def assert_no_call_lost(drilled: Drilled) -> None:
    assert drilled.figures.failed == 0, drilled.failures[:5]
    assert drilled.figures.calls >= 20
    assert not drilled.over_budget, drilled.over_budget[:10]
    assert_store_exact(drilled)
