"""The lookup: decrypt, HMAC, then decide in one transaction. HTTP is :mod:`.app`'s business.

A call's card, PIN and caller number are decrypted in one Transit batch and HMACed with
``ivr-lookup`` in one batch, before any store work: no Vault call ever happens inside the
transaction. :func:`~service.backend.decision.decide` then checks, compares and records in
one transaction (``Store.transaction``: SQLite's ``BEGIN IMMEDIATE``, or PostgreSQL's row
locks), so concurrent lookups of one card are decided one after the other, on one backend
or several: a burst of wrong PINs is evaluated exactly up to the lock. Only when the card
is unknown at the latest key version and older versions are still stored does the lookup
HMAC at those versions and decide again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

import structlog

from service.backend.decision import (
    Attempt,
    Decision,
    HttpAnswer,
    LookupOutcome,
    LookupResult,
    Verifiers,
    decide,
)
from service.backend.keycheck import LookupKeys
from service.backend.policy import LockKind, LockoutPolicy
from service.backend.schema import LookupRequest
from service.errors import DecryptionError
from service.logs.scrubbing import fingerprint
from service.settings import Settings
from service.store.accounts import (
    Store,
    caller_input,
    card_input,
    pin_input,
    verifier_version,
)
from service.store.ledger import Answer
from service.vault.formats import caller_bucket, ciphertext_version, is_four_digits
from service.vault.transit import Transit, call_context
from service.web import budget
from service.web.access_log import annotate
from service.web.metrics import Metrics

log = structlog.get_logger("ivr.backend")

T = TypeVar("T")

# An unknown card asks for older key versions at most this often (once, unless a rotation
# lands between two passes).
_MAX_PASSES = 3


async def verifiers(transit: Transit, last4: str, pin: str, *,
                    key_version: int | None = None) -> tuple[str, str]:
    """The card and PIN verifiers of an entry: what the store holds instead of digits."""
    card_v, pin_v = await transit.hmac([card_input(last4), pin_input(last4, pin)],
                                       key_version=key_version)
    return card_v, pin_v


def _entry(plaintext: bytes) -> str | None:
    text = plaintext.decode("ascii", "replace")
    return text if is_four_digits(text) else None


def _transaction_limit(left: float | None) -> float | None:
    """What the store's transaction may take of the budget ``left`` (none: no limit). One
    that starts with nothing left still gets a moment: the wait is bounded by the edge's
    own timeout, this limit is what frees the transaction's locks."""
    return None if left is None else max(0.05, left)


@dataclass
class Lookup:
    """The decision and what it needs, made once in the backend's lifespan."""

    settings: Settings
    transit: Transit
    store: Store
    metrics: Metrics
    executor: ThreadPoolExecutor  # for the store's blocking calls
    keys: LookupKeys | None = None  # the ivr-lookup canaries (keycheck.py)

    @property
    def answer_ttl(self) -> float:
        """How long a call's answers are remembered: as long as a call can last. The
        webhook refuses a PIN step older than STEP_MAX_AGE (at most CALL_MAX_AGE), so a
        replay can never outlive its remembered answer and come back as a fresh lookup."""
        return self.settings.call_max_age

    async def db(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    async def remembered(self, call_sid: str, request_key: str) -> Answer | None:
        """The answer already given to this very request, if any."""
        return await self.db(self.store.answer, call_sid, request_key, time.time(),
                             self.answer_ttl)

    async def __call__(self, request: LookupRequest, answer: HttpAnswer,
                       request_key: str | None = None) -> Decision:
        """Decide. Raises :class:`~service.errors.VaultError` when Vault cannot answer:
        then nothing was decided and nothing written. Within a request's budget
        (:mod:`service.web.budget`) the store's transaction ends with StoreUnavailable
        past it, lock waits included, and commits nothing."""
        try:
            card_pt, pin_pt, caller_pt = await self.transit.decrypt([
                (request.card_last4, call_context(request.call_sid, "card_last4")),
                (request.pin, call_context(request.call_sid, "pin")),
                (request.caller, call_context(request.call_sid, "caller")),
            ])
        except DecryptionError:
            annotate(card_version=ciphertext_version(request.card_last4))
            return Decision(LookupResult(LookupOutcome.UNDECRYPTABLE))
        last4, pin = _entry(card_pt), _entry(pin_pt)
        if last4 is None or pin is None:
            return Decision(LookupResult(LookupOutcome.MALFORMED))
        caller = caller_bucket(caller_pt.decode("utf-8", "replace"))
        card_v, pin_v, caller_v = await self.transit.hmac(
            [card_input(last4), pin_input(last4, pin), caller_input(caller)])
        if self.keys is not None:
            # The latest version's canary is on record before any verifier made with it
            # can be stored (a verifier upgrade in the decision); after the first lookup
            # at a version this costs nothing.
            await self.keys.record(verifier_version(card_v))

        attempt = Attempt(request.call_sid, request_key, caller_v,
                          (Verifiers(card_v, pin_v),))
        policy = LockoutPolicy.from_settings(self.settings)
        for passes in range(1, _MAX_PASSES + 1):
            timeout = _transaction_limit(budget.left())
            decision: Decision = await self.db(partial(
                self.store.transaction, partial(
                    decide, attempt=attempt, policy=policy, now=time.time(), answer=answer,
                    answer_ttl=self.answer_ttl, final=passes == _MAX_PASSES),
                timeout=timeout))
            if not decision.need_versions:
                break
            older = [Verifiers(*await verifiers(self.transit, last4, pin, key_version=v))
                     for v in decision.need_versions]
            attempt = replace(attempt, candidates=(*attempt.candidates, *older))
        self._report(decision, caller_v)
        return decision

    def _report(self, decision: Decision, caller_v: str) -> None:
        """Metrics and log lines, once the decision has committed. Never a digit: the
        account number is masked by the scrubber, the caller is a fingerprint of its HMAC."""
        if decision.wrong_pin:
            self.metrics.wrong_pins.inc()
        if decision.upgraded:
            annotate(verifier_upgraded=True)
        if decision.lock is not None:
            self.metrics.lockouts.labels(decision.lock.value).inc()
            log.warning("card locked after consecutive wrong PINs", kind=decision.lock.value,
                        account=decision.account)
        if decision.caller_cut_off:
            self.metrics.lockouts.labels(LockKind.CALLER.value).inc()
            log.warning("caller cut off after repeated failed lookups",
                        caller_fp=fingerprint(caller_v))
