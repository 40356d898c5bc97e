"""A lookup's decision, taken inside one store transaction: plain Python over a
:class:`~service.store.ledger.Ledger`, so both stores (SQLite, PostgreSQL) decide the same
way.

In order, each step reading the store as it is now:

1. The very same request (call and request key) again: the answer it was given.
2. The caller number cut off (withheld numbers: their shared bucket's own limit and
   window): the goodbye, with no lookup at all.
3. Identification, by the identifier's verifier at the latest key version, else at older
   versions (which the lookup HMACs only when this asks for them): the account of the
   typed account number, or the accounts the caller number is registered on (the one
   whose card matches); when that finds no account, and the card-only lookup is allowed,
   a migrated account by its card alone.
4. A second lookup in a call that had one (another request key): refused; a failure of the
   account and of the caller, though no PIN is compared.
5. No account: a caller failure. Locked account: a caller failure; nothing is compared, so
   the answer says nothing about it. Otherwise the card (account-number path) and PIN
   verifiers are compared in constant time: a wrong one is an account and a caller failure
   (maybe a lock); a correct one forgets the account's failures (never the caller's: one
   good account must not buy more guesses on others).

Every outcome's answer is remembered for the call in the same transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from service.backend.policy import LockKind, LockoutPolicy
from service.store.accounts import verifier_version
from service.store.identity import bind, matches
from service.store.ledger import Account, Answer, CardState, Ledger


class LookupOutcome(StrEnum):
    """What one lookup decided. The words are the access line's ``outcome`` and the
    ``ivr_lookups_total{outcome}`` label; :mod:`.app` maps each to its HTTP answer."""

    FOUND = "found"
    NOT_FOUND = "not_found"  # no such account, wrong card or PIN: deliberately the same
    LOCKED = "locked"  # too many wrong entries for this account
    CALLER_CUT_OFF = "caller_cut_off"  # too many failed lookups from this caller number
    SECOND_LOOKUP = "second_lookup"  # this call already had its lookup
    UNDECRYPTABLE = "undecryptable"  # tampered, another call's, or a retired key version
    MALFORMED = "malformed"  # decrypted, but not the entries' digits


@dataclass(frozen=True)
class LookupResult:
    outcome: LookupOutcome
    account: str | None = None  # with FOUND only
    balance: str | None = None


# How the HTTP edge answers a result: (status, JSON body). The decision remembers that
# answer in the same transaction as its other writes, so a retry gets the very same one.
HttpAnswer = Callable[[LookupResult], tuple[int, dict[str, Any]]]


class Identification(StrEnum):
    """How the caller asked to be identified (the request's ``account_number`` or
    ``registered``); NONE: neither (a client of the old contract): the card-only lookup."""

    ACCOUNT_NUMBER = "account_number"
    CALLER = "caller"
    NONE = "none"


@dataclass(frozen=True)
class Hmacs:
    """Transit's HMACs of a call's entries at one ``ivr-lookup`` version: the identifier
    (None on a path without one, or an unattested registered-phone path), the card and
    the PIN, before they are bound to any account."""

    identity: str | None
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
    caller: str  # the caller number's keyed HMAC (its failure bucket)
    withheld: bool  # the shared bucket of withheld numbers
    identified_by: Identification
    candidates: tuple[Hmacs, ...]  # the latest first, then older versions if asked for
    card_only: bool = False  # LEGACY_CARD_LOOKUP: migrated accounts by their card alone


@dataclass(frozen=True)
class Decision:
    """What the transaction decided, for the lookup to report (metrics, log lines)."""

    result: LookupResult | None = None  # None with ``replayed`` or ``need_versions``
    replayed: Answer | None = None  # the very same request, answered before
    need_versions: tuple[int, ...] = ()  # verifiers at versions not yet HMACed: these
    compared: bool = False  # a card or PIN verifier was compared
    wrong_pin: bool = False  # a wrong card or PIN of an identified account
    lock: LockKind | None = None  # the lock this decision set, if any
    account: str | None = None  # the account's reference (letters), when a lock names it
    caller_cut_off: bool = False  # this failure cut the caller off
    upgraded: bool = False  # the verifiers were re-made at the latest version
    legacy: bool = False  # found by the card-only lookup


@dataclass(frozen=True)
class _Found:
    account: Account
    card_ok: bool
    entry: Hmacs  # the entries at the account's verifier version
    identity: Hmacs | None  # the identifier's HMACs at the version it was found with
    registration: int | None = None  # the registration's version (caller path)
    legacy: bool = False


class _Need(Exception):
    """Identification needs verifiers at versions not HMACed yet."""

    def __init__(self, versions: tuple[int, ...]) -> None:
        self.versions = versions


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
    versions will be offered (what is not found at those is not there)."""
    answers = ledger.answers(attempt.call_sid)
    if attempt.request_key is not None and attempt.request_key in answers:
        return Decision(replayed=answers[attempt.request_key])

    limit, window = policy.caller_bucket(withheld=attempt.withheld)
    recent = ledger.caller_failures(attempt.caller, now - window)
    if recent >= limit:
        return _answered(
            ledger,
            attempt,
            Decision(LookupResult(LookupOutcome.CALLER_CUT_OFF)),
            now=now,
            answer=answer,
            ttl=answer_ttl,
        )

    try:
        found = _identify(ledger, attempt, final=final)
    except _Need as need:
        return Decision(need_versions=need.versions)

    decision = _judge(ledger, attempt, found, second=bool(answers), policy=policy, now=now)
    if decision.result is not None and decision.result.outcome is not LookupOutcome.FOUND:
        ledger.add_caller_failure(attempt.caller, now, window)
        if recent + 1 >= limit:
            decision = replace(decision, caller_cut_off=True)
    return _answered(ledger, attempt, decision, now=now, answer=answer, ttl=answer_ttl)


def _at(ledger: Ledger, attempt: Attempt, version: int, *, final: bool) -> Hmacs | None:
    """The entries' HMACs at ``version``; when not made yet, ask for every version the
    store uses that is missing (None once ``final``)."""
    for hmacs in attempt.candidates:
        if hmacs.version == version:
            return hmacs
    if not final:
        _ask_missing(ledger, attempt)
    return None


def _ask_missing(ledger: Ledger, attempt: Attempt) -> None:
    tried = {h.version for h in attempt.candidates}
    missing = tuple(v for v in ledger.versions() if v not in tried)
    if missing:
        raise _Need(missing)


def _identify(ledger: Ledger, attempt: Attempt, *, final: bool) -> _Found | None:
    for hmacs in attempt.candidates:
        if hmacs.identity is None:
            break
        if attempt.identified_by is Identification.ACCOUNT_NUMBER:
            account = ledger.account_by_number(hmacs.identity)
            if account is not None:
                entry = _at(ledger, attempt, account.lookup_version, final=final)
                ok = entry is not None and matches(
                    account.card_verifier, account.salt, entry.card, salted=account.salted
                )
                return _Found(account, ok, entry or hmacs, hmacs)
        elif attempt.identified_by is Identification.CALLER:
            registered = ledger.accounts_by_caller(hmacs.identity)
            if registered:
                for account, version in registered:
                    entry = _at(ledger, attempt, account.lookup_version, final=final)
                    if entry is not None and matches(
                        account.card_verifier, account.salt, entry.card, salted=account.salted
                    ):
                        return _Found(account, True, entry, hmacs, registration=version)
                return None  # a number registered, but on no account with this card
    if attempt.card_only:
        for hmacs in attempt.candidates:
            account = ledger.legacy_account(hmacs.card)
            if account is not None:
                return _Found(account, True, hmacs, None, legacy=True)
    if not final:
        _ask_missing(ledger, attempt)
    return None


def _judge(
    ledger: Ledger,
    attempt: Attempt,
    found: _Found | None,
    *,
    second: bool,
    policy: LockoutPolicy,
    now: float,
) -> Decision:
    if found is None:
        outcome = LookupOutcome.SECOND_LOOKUP if second else LookupOutcome.NOT_FOUND
        return Decision(LookupResult(outcome))
    account = found.account
    state = ledger.card_state(account.id)
    if state.locked(now):
        outcome = LookupOutcome.SECOND_LOOKUP if second else LookupOutcome.LOCKED
        return Decision(LookupResult(outcome))
    if second:
        lock = _fail(ledger, account, state, policy, now)
        return Decision(LookupResult(LookupOutcome.SECOND_LOOKUP), lock=lock, account=account.ref)
    if not (
        found.card_ok
        and matches(account.pin_verifier, account.salt, found.entry.pin, salted=account.salted)
    ):
        lock = _fail(ledger, account, state, policy, now)
        return Decision(
            LookupResult(LookupOutcome.NOT_FOUND),
            compared=True,
            wrong_pin=True,
            lock=lock,
            account=account.ref,
        )
    if state != CardState():
        ledger.set_card_state(account.id, CardState())
    ledger.succeeded(account.id, now)
    upgraded = _upgrade(ledger, attempt.candidates[0], found)
    return Decision(
        LookupResult(LookupOutcome.FOUND, account.account, account.balance),
        compared=True,
        upgraded=upgraded,
        legacy=found.legacy,
    )


def _upgrade(ledger: Ledger, latest: Hmacs, found: _Found) -> bool:
    """Re-make what was matched at an older key version, or unsalted, at the latest
    version, bound to the account: only what this call's entries give."""
    account, upgraded = found.account, False
    if account.lookup_version < latest.version or not account.salted:
        ledger.replace_verifiers(
            account.id,
            bind(account.salt, latest.card),
            bind(account.salt, latest.pin),
            latest.card if account.legacy_card is not None else None,
        )
        upgraded = True
    identity = found.identity
    if identity is None or latest.identity is None or identity.version >= latest.version:
        return upgraded
    if found.registration is not None:
        assert identity.identity is not None
        ledger.replace_registration(account.id, identity.identity, latest.identity)
    else:
        ledger.replace_number(account.id, latest.identity)
    return True


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
