"""The lookup: decrypt, HMAC, then decide in one transaction. HTTP is :mod:`.app`'s business.

A call's entries (account number if typed, card, PIN) and caller number are decrypted in
one Transit batch and HMACed with ``ivr-lookup`` in one batch (the identifier, the card,
the PIN, the caller's failure bucket), before any store work: no Vault call ever happens
inside the transaction. The card and PIN HMACs are bound to each candidate account by its
salt locally (``service/store/identity.py``). :func:`~service.backend.decision.decide`
then checks, compares and records in one transaction (``Store.transaction``: SQLite's
``BEGIN IMMEDIATE``, or PostgreSQL's row locks), so concurrent lookups of one account are
decided one after the other, on one backend or several. Only when something is not found
at the latest key version and older versions are still stored does the lookup HMAC at
those versions and decide again.
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
    Hmacs,
    HttpAnswer,
    Identification,
    LookupOutcome,
    LookupResult,
    decide,
)
from service.backend.keycheck import LookupKeys
from service.backend.policy import LockKind, LockoutPolicy
from service.backend.schema import LookupRequest
from service.errors import DecryptionError
from service.formats import (
    ANONYMOUS_CALLER,
    CARD_DIGITS,
    PIN_DIGITS,
    caller_bucket,
    ciphertext_version,
    is_digits,
)
from service.logs.scrubbing import fingerprint
from service.settings import Settings
from service.store.accounts import Store, verifier_version
from service.store.identity import (
    caller_input,
    card_input,
    number_input,
    pin_input,
    registered_input,
)
from service.store.ledger import Answer
from service.vault.transit import Transit, call_context
from service.web import budget
from service.web.access_log import annotate
from service.web.metrics import Metrics

log = structlog.get_logger("ivr.backend")

T = TypeVar("T")

# An unknown card asks for older key versions at most this often (once, unless a rotation
# lands between two passes).
_MAX_PASSES = 3


# The one StirVerstat value that attests the caller owns the number (Twilio, "Trusted
# Calling with SHAKEN/STIR": full attestation).
ATTESTED = "TN-Validation-Passed-A"


async def entry_hmacs(
    transit: Transit,
    identity: bytes | None,
    last4: str,
    pin: str,
    *,
    key_version: int | None = None,
) -> Hmacs:
    """Transit's HMACs of a call's identifier, card and PIN at one key version."""
    inputs = [card_input(last4), pin_input(last4, pin)]
    outputs = await transit.hmac(
        [*inputs, *([identity] if identity else [])], key_version=key_version
    )
    return Hmacs(outputs[2] if identity else None, outputs[0], outputs[1])


def _entry(plaintext: bytes, digits: int) -> str | None:
    text = plaintext.decode("ascii", "replace")
    return text if is_digits(text, digits) else None


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
    card_only: bool = False  # LEGACY_CARD_LOOKUP, as decided at start-up

    @property
    def answer_ttl(self) -> float:
        """How long a call's answers are remembered: as long as a call can last. The
        webhook refuses a PIN step older than STEP_MAX_AGE (at most CALL_MAX_AGE), so a
        replay can never outlive its remembered answer and come back as a fresh lookup."""
        return self.settings.call_max_age

    async def db(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    async def remembered(self, call_sid: str, request_key: str) -> Answer | None:
        """The answer already given to this very request, if any: read on its own only by
        a lookup that cannot reach its transaction (app.py), which otherwise reads it."""
        return await self.db(self.store.answer, call_sid, request_key, time.time(), self.answer_ttl)

    async def __call__(
        self, request: LookupRequest, answer: HttpAnswer, request_key: str | None = None
    ) -> Decision:
        """Decide. Raises :class:`~service.errors.VaultError` when Vault cannot answer:
        then nothing was decided and nothing written. Within a request's budget
        (:mod:`service.web.budget`) the store's transaction ends with StoreUnavailable
        past it, lock waits included, and commits nothing."""
        context = partial(call_context, request.call_sid)
        items = [
            (request.card_last4, context("card_last4")),
            (request.pin, context("pin")),
            (request.caller, context("caller")),
        ]
        if request.account_number is not None:
            items.append((request.account_number, context("account_number")))
        try:
            plaintexts = await self.transit.decrypt(items)
        except DecryptionError:
            annotate(card_version=ciphertext_version(request.card_last4))
            return Decision(LookupResult(LookupOutcome.UNDECRYPTABLE))
        last4, pin = _entry(plaintexts[0], CARD_DIGITS), _entry(plaintexts[1], PIN_DIGITS)
        number = (
            _entry(plaintexts[3], self.settings.account_number_digits)
            if request.account_number is not None
            else ""
        )
        if last4 is None or pin is None or number is None:
            return Decision(LookupResult(LookupOutcome.MALFORMED))
        caller = caller_bucket(plaintexts[2].decode("utf-8", "replace"))
        withheld = caller == ANONYMOUS_CALLER
        identified_by, identity = self._identity(request, number, caller)
        # One Transit call: the identifier, the card, the PIN and the caller's bucket.
        inputs = [
            card_input(last4),
            pin_input(last4, pin),
            caller_input(caller),
            *([identity] if identity else []),
        ]
        outputs = await self.transit.hmac(inputs)
        latest = Hmacs(outputs[3] if identity else None, outputs[0], outputs[1])
        caller_v = outputs[2]
        if self.keys is not None:
            # The latest version's canary is on record before any verifier made with it
            # can be stored (a verifier upgrade in the decision); after the first lookup
            # at a version this costs nothing.
            await self.keys.record(verifier_version(latest.card))

        attempt = Attempt(
            request.call_sid,
            request_key,
            caller_v,
            withheld,
            identified_by,
            (latest,),
            card_only=self.card_only,
        )
        policy = LockoutPolicy.from_settings(self.settings)
        for passes in range(1, _MAX_PASSES + 1):
            timeout = _transaction_limit(budget.left())
            decision: Decision = await self.db(
                partial(
                    self.store.transaction,
                    partial(
                        decide,
                        attempt=attempt,
                        policy=policy,
                        now=time.time(),
                        answer=answer,
                        answer_ttl=self.answer_ttl,
                        final=passes == _MAX_PASSES,
                    ),
                    timeout=timeout,
                )
            )
            if not decision.need_versions:
                break
            older = [
                await entry_hmacs(self.transit, identity, last4, pin, key_version=v)
                for v in decision.need_versions
            ]
            attempt = replace(attempt, candidates=(*attempt.candidates, *older))
        self._report(decision, caller_v)
        return decision

    def _identity(
        self,
        request: LookupRequest,
        number: str,
        caller: str,
    ) -> tuple[Identification, bytes | None]:
        """How the caller is identified, and the input to HMAC for it: None on the
        registered-phone path from a withheld number, or, with
        CALLER_ID_REQUIRES_ATTESTATION, an unattested one (no account is then found)."""
        if request.account_number is not None:
            return Identification.ACCOUNT_NUMBER, number_input(number)
        if not request.registered:
            return Identification.NONE, None
        attested = request.stir_verstat == ATTESTED
        if caller == ANONYMOUS_CALLER or (
            self.settings.caller_id_requires_attestation == "on" and not attested
        ):
            annotate(identification="unattested" if caller != ANONYMOUS_CALLER else "withheld")
            return Identification.CALLER, None
        return Identification.CALLER, registered_input(caller)

    def _report(self, decision: Decision, caller_v: str) -> None:
        """Metrics and log lines, once the decision has committed. Never a digit: the
        account is named by its letters-only reference, the caller by a fingerprint of its
        HMAC."""
        if decision.wrong_pin:
            self.metrics.wrong_pins.inc()
        if decision.upgraded:
            annotate(verifier_upgraded=True)
        if decision.legacy:
            annotate(card_only_lookup=True)
        if decision.lock is not None:
            self.metrics.lockouts.labels(decision.lock.value).inc()
            log.warning(
                "card locked after consecutive wrong PINs",
                kind=decision.lock.value,
                account_ref=decision.account,
            )
        if decision.caller_cut_off:
            self.metrics.lockouts.labels(LockKind.CALLER.value).inc()
            log.warning(
                "caller cut off after repeated failed lookups", caller_fp=fingerprint(caller_v)
            )
