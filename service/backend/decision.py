"""A lookup's decision, taken inside one store transaction: plain Python over a
:class:`~service.store.ledger.Ledger`, so both stores (SQLite, PostgreSQL) decide the same
way.

In order, each step reading the store as it is now:

1. The very same request (call and request key) again: the answer it was given.
2. The caller number cut off: the goodbye, with no lookup at all.
3. The card, by its verifier at the latest key version, else at older versions (which the
   lookup HMACs only when this asks for them).
4. A second lookup in a call that had one (another request key): refused; a failure of the
   card and of the caller, though no PIN is compared.
5. Unknown card: a caller failure. Locked card: a caller failure; its PIN is not compared,
   so the answer says nothing about it. Otherwise the PIN verifier is compared in constant
   time: a wrong PIN is a card and a caller failure (maybe a lock); a correct one forgets the
   card's failures (never the caller's: one good card must not buy more guesses on others).

Every outcome's answer is remembered for the call in the same transaction.
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from service.backend.policy import LockKind, LockoutPolicy
from service.store.accounts import verifier_version
from service.store.ledger import Account, Answer, CardState, Ledger


class LookupOutcome(StrEnum):
    """What one lookup decided. The words are the access line's ``outcome`` and the
    ``ivr_lookups_total{outcome}`` label; :mod:`.app` maps each to its HTTP answer."""

    FOUND = "found"
    NOT_FOUND = "not_found"  # unknown card or wrong PIN: deliberately the same answer
    LOCKED = "locked"  # too many wrong PINs for this card
    CALLER_CUT_OFF = "caller_cut_off"  # too many failed lookups from this caller number
    SECOND_LOOKUP = "second_lookup"  # this call already had its lookup
    UNDECRYPTABLE = "undecryptable"  # tampered, another call's, or a retired key version
    MALFORMED = "malformed"  # decrypted, but not two 4-digit entries


@dataclass(frozen=True)
class LookupResult:
    outcome: LookupOutcome
    account: str | None = None  # with FOUND only
    balance: str | None = None


# How the HTTP edge answers a result: (status, JSON body). The decision remembers that
# answer in the same transaction as its other writes, so a retry gets the very same one.
HttpAnswer = Callable[[LookupResult], tuple[int, dict[str, Any]]]


@dataclass(frozen=True)
class Verifiers:
    """An entry's card and PIN verifiers at one ``ivr-lookup`` version."""

    card: str
    pin: str

    @property
    def version(self) -> int:
        return verifier_version(self.card)


@dataclass(frozen=True)
class Attempt:
    """Everything the decision needs from Vault, computed before the transaction."""

    call_sid: str
    request_key: str | None  # None: a request without a key, never a retry of another
    caller: str  # the caller number's keyed HMAC
    candidates: tuple[Verifiers, ...]  # the latest first, then older versions if asked for


@dataclass(frozen=True)
class Decision:
    """What the transaction decided, for the lookup to report (metrics, log lines)."""

    result: LookupResult | None = None  # None with ``replayed`` or ``need_versions``
    replayed: Answer | None = None  # the very same request, answered before
    need_versions: tuple[int, ...] = ()  # unknown card at the versions tried: try these
    compared: bool = False  # a PIN verifier was compared
    wrong_pin: bool = False
    lock: LockKind | None = None  # the lock this decision set, if any
    account: str | None = None  # the account number, when a lock names it
    caller_cut_off: bool = False  # this failure cut the caller off
    upgraded: bool = False  # the verifiers were re-made at the latest version


def decide(
    ledger: Ledger,
    attempt: Attempt,
    *,
    policy: LockoutPolicy,
    now: float,
    answer: HttpAnswer,
    answer_ttl: float,
    final: bool = False,
) -> Decision:
    """Decide, reading and writing through ``ledger`` (one transaction). Writes nothing
    when it returns ``replayed`` or ``need_versions``; ``final`` says no other key
    versions will be offered (an unknown card is then unknown)."""
    answers = ledger.answers(attempt.call_sid)
    if attempt.request_key is not None and attempt.request_key in answers:
        return Decision(replayed=answers[attempt.request_key])

    recent = ledger.caller_failures(attempt.caller, now - policy.caller_window)
    if policy.caller_cut_off(recent):
        return _answered(
            ledger,
            attempt,
            Decision(LookupResult(LookupOutcome.CALLER_CUT_OFF)),
            now=now,
            answer=answer,
            ttl=answer_ttl,
        )

    found = _find(ledger, attempt.candidates)
    if found is None and not final:
        tried = {v.version for v in attempt.candidates}
        missing = tuple(v for v in ledger.versions() if v not in tried)
        if missing:
            return Decision(need_versions=missing)

    decision = _judge(ledger, attempt, found, second=bool(answers), policy=policy, now=now)
    if decision.result is not None and decision.result.outcome is not LookupOutcome.FOUND:
        ledger.add_caller_failure(attempt.caller, now, policy.caller_window)
        if policy.caller_cut_off(recent + 1):
            decision = replace(decision, caller_cut_off=True)
    return _answered(ledger, attempt, decision, now=now, answer=answer, ttl=answer_ttl)


def _find(
    ledger: Ledger,
    candidates: tuple[Verifiers, ...],
) -> tuple[Account, Verifiers] | None:
    for verifiers in candidates:
        account = ledger.account(verifiers.card)
        if account is not None:
            return account, verifiers
    return None


def _judge(
    ledger: Ledger,
    attempt: Attempt,
    found: tuple[Account, Verifiers] | None,
    *,
    second: bool,
    policy: LockoutPolicy,
    now: float,
) -> Decision:
    if found is None:
        outcome = LookupOutcome.SECOND_LOOKUP if second else LookupOutcome.NOT_FOUND
        return Decision(LookupResult(outcome))
    account, verifiers = found
    state = ledger.card_state(account.id)
    if state.locked(now):
        outcome = LookupOutcome.SECOND_LOOKUP if second else LookupOutcome.LOCKED
        return Decision(LookupResult(outcome))
    if second:
        lock = _fail(ledger, account, state, policy, now)
        return Decision(
            LookupResult(LookupOutcome.SECOND_LOOKUP), lock=lock, account=account.account
        )
    if not hmac.compare_digest(verifiers.pin.encode(), account.pin_verifier.encode()):
        lock = _fail(ledger, account, state, policy, now)
        return Decision(
            LookupResult(LookupOutcome.NOT_FOUND),
            compared=True,
            wrong_pin=True,
            lock=lock,
            account=account.account,
        )
    if state != CardState():
        ledger.set_card_state(account.id, CardState())
    latest = attempt.candidates[0]
    upgraded = account.lookup_version < latest.version
    if upgraded:
        ledger.replace_verifiers(account.id, latest.card, latest.pin)
    return Decision(
        LookupResult(LookupOutcome.FOUND, account.account, account.balance),
        compared=True,
        upgraded=upgraded,
    )


def _fail(
    ledger: Ledger, account: Account, state: CardState, policy: LockoutPolicy, now: float
) -> LockKind | None:
    new_state, lock = policy.after_wrong_pin(state, now)
    ledger.set_card_state(account.id, new_state)
    return lock


def _answered(
    ledger: Ledger,
    attempt: Attempt,
    decision: Decision,
    *,
    now: float,
    answer: HttpAnswer,
    ttl: float,
) -> Decision:
    """Remember the decision's answer for this call. A request without a key is kept under
    a key of its own, so that it still marks the call as looked up."""
    assert decision.result is not None
    status, body = answer(decision.result)
    key = attempt.request_key or f"unkeyed:{uuid.uuid4().hex}"
    ledger.remember(attempt.call_sid, key, (status, json.dumps(body)), now, ttl)
    return decision
