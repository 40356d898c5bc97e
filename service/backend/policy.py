"""The lockout policy's arithmetic: pure functions of counts and times, no store, no clock.

Per card (docs/security.md, "PIN guessing and Twilio retries"): consecutive wrong PINs are
counted until a correct PIN or an operator's unlock, never forgotten by time. Every
``threshold`` of them locks the card, the n-th lock for ``duration * 2**(n-1)``; at
``hard_limit`` the card stays locked until ``ivr-vault accounts unlock``. While a card is
locked its PIN is not compared, so a locked attempt says nothing and counts nothing for
the card.

Per caller number: failed lookups within a sliding ``caller_window``; at ``caller_limit``
the number is cut off (it hears the goodbye, with no lookup) until its failures age out.
Withheld numbers share one bucket, with its own ``withheld_limit`` and ``withheld_window``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from service.settings import Settings
from service.store.ledger import CardState

# Past this a lock is as good as permanent; the cap keeps 2^(n-1) from overflowing a float
# when THRESHOLD is small and HARD_LIMIT large.
MAX_LOCK_S = 365 * 86400.0


class LockKind(StrEnum):
    """The ``kind`` label of ``ivr_lockouts_total`` (the alert rules use these words)."""

    CARD = "card"  # a lock that ends by itself
    CARD_HARD = "card_hard"  # until an operator unlocks it
    CALLER = "caller"  # a caller number cut off


@dataclass(frozen=True)
class LockoutPolicy:
    threshold: int
    duration: float
    hard_limit: int
    caller_limit: int
    caller_window: float
    withheld_limit: int = 100
    withheld_window: float = 600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LockoutPolicy:
        return cls(
            settings.lockout_threshold,
            settings.lockout_duration,
            settings.lockout_hard_limit,
            settings.caller_failure_limit,
            settings.caller_failure_window,
            settings.withheld_failure_limit,
            settings.withheld_failure_window,
        )

    def caller_bucket(self, *, withheld: bool) -> tuple[int, float]:
        """The failure limit and window of a caller's bucket: withheld numbers share one,
        with its own (one attacker must not cut every withheld caller off for
        the day)."""
        if withheld:
            return self.withheld_limit, self.withheld_window
        return self.caller_limit, self.caller_window

    def lock_seconds(self, nth: int) -> float:
        """How long the ``nth`` lock (1, 2, …) lasts: the duration, doubled for each lock
        before it."""
        if nth < 1:
            raise ValueError("locks are counted from 1")
        return min(self.duration * 2.0 ** min(nth - 1, 64), MAX_LOCK_S)

    def after_wrong_pin(
        self,
        state: CardState,
        now: float,
    ) -> tuple[CardState, LockKind | None]:
        """The card's state after one more wrong PIN (compared while it was not locked),
        and the lock this failure set, if any."""
        failures = state.failures + 1
        if failures >= self.hard_limit:
            return CardState(failures, 0.0, hard=True), LockKind.CARD_HARD
        if failures % self.threshold == 0:
            until = now + self.lock_seconds(failures // self.threshold)
            return CardState(failures, until), LockKind.CARD
        return CardState(failures, state.locked_until), None

    def caller_cut_off(self, recent_failures: int) -> bool:
        """Whether a caller with this many failures in the window hears the goodbye
        without a lookup."""
        return recent_failures >= self.caller_limit
