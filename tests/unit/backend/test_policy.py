"""The lockout policy's arithmetic (service/backend/policy.py): when a wrong PIN locks, for
how long, when the lock is for good, and when a caller number is cut off."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.backend.policy import MAX_LOCK_S, LockKind, LockoutPolicy
from service.settings import Settings
from service.store.ledger import CardState

DEFAULT = LockoutPolicy.from_settings(Settings())
NOW = 1_000_000.0


CLEAN = CardState()


def wrong_pins(
    policy: LockoutPolicy,
    count: int,
    *,
    start: CardState = CLEAN,
) -> tuple[CardState, list[LockKind | None]]:
    """``count`` wrong PINs, each made right after the lock before it ended (a patient
    guesser: a locked card compares nothing, so only unlocked tries are wrong PINs)."""
    state, locks, now = start, [], NOW
    for _ in range(count):
        now = max(now, state.locked_until) + 1
        state, lock = policy.after_wrong_pin(state, now)
        locks.append(lock)
    return state, locks


def test_defaults_are_the_issue_s() -> None:
    expected = LockoutPolicy(
        threshold=5, duration=900, hard_limit=10, caller_limit=10, caller_window=86_400
    )
    assert expected == DEFAULT


def test_the_fifth_wrong_pin_locks_for_fifteen_minutes_the_tenth_for_good() -> None:
    state, locks = wrong_pins(DEFAULT, 4)
    assert locks == [None] * 4 and state == CardState(4)
    state, lock = DEFAULT.after_wrong_pin(state, NOW)
    assert lock is LockKind.CARD and state == CardState(5, NOW + 900)
    assert state.locked(NOW + 899.9) and not state.locked(NOW + 900)
    state, locks = wrong_pins(DEFAULT, 5, start=state)
    assert locks == [None] * 4 + [LockKind.CARD_HARD]
    assert state.hard and state.failures == 10 and state.locked(NOW + 10 * 365 * 86400)


def test_each_further_lock_doubles() -> None:
    policy = LockoutPolicy(
        threshold=3, duration=60, hard_limit=12, caller_limit=10, caller_window=60
    )
    assert [policy.lock_seconds(n) for n in (1, 2, 3)] == [60, 120, 240]
    state, locks = wrong_pins(policy, 12)
    assert [i + 1 for i, lock in enumerate(locks) if lock is LockKind.CARD] == [3, 6, 9]
    assert locks[-1] is LockKind.CARD_HARD
    # The 9th wrong PIN sets the third lock: 240 s from the moment it is made.
    after_eight, _ = wrong_pins(policy, 8)
    at = after_eight.locked_until + 1
    state, lock = policy.after_wrong_pin(after_eight, at)
    assert (lock, state) == (LockKind.CARD, CardState(9, at + 240))


def test_failures_are_not_forgotten_by_time() -> None:
    """Four wrong PINs, then a year, then one more: it is the fifth, and it locks."""
    state, _ = wrong_pins(DEFAULT, 4)
    state, lock = DEFAULT.after_wrong_pin(state, NOW + 365 * 86400)
    assert lock is LockKind.CARD and state.failures == 5


@given(
    threshold=st.integers(1, 100),
    hard=st.integers(1, 1000),
    nth=st.integers(1, 1000),
    duration=st.floats(1, 1e7),
)
def test_lock_lengths_are_bounded_and_never_overflow(
    threshold: int, hard: int, nth: int, duration: float
) -> None:
    policy = LockoutPolicy(threshold, duration, max(hard, threshold), 10, 60)
    seconds = policy.lock_seconds(nth)
    assert 0 < seconds <= MAX_LOCK_S
    assert seconds == min(duration * 2 ** (nth - 1), MAX_LOCK_S)


@given(threshold=st.integers(1, 20), extra=st.integers(0, 40), count=st.integers(0, 80))
def test_the_hard_lock_comes_at_the_hard_limit_and_nothing_before_it_is_hard(
    threshold: int, extra: int, count: int
) -> None:
    policy = LockoutPolicy(threshold, 60, threshold + extra, 10, 60)
    state, locks = wrong_pins(policy, min(count, policy.hard_limit))
    assert state.hard == (count >= policy.hard_limit)
    assert locks.count(LockKind.CARD_HARD) == (1 if count >= policy.hard_limit else 0)
    expected_card_locks = sum(
        1 for n in range(1, min(count, policy.hard_limit - 1) + 1) if n % threshold == 0
    )
    assert locks.count(LockKind.CARD) == expected_card_locks


def test_lock_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        DEFAULT.lock_seconds(0)


@pytest.mark.parametrize(("failures", "cut_off"), [(0, False), (9, False), (10, True), (11, True)])
def test_a_caller_is_cut_off_at_the_limit(failures: int, cut_off: bool) -> None:
    assert DEFAULT.caller_cut_off(failures) is cut_off
