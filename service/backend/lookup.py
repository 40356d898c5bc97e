"""The lookup decision: decrypt, HMAC, find, compare, settle. HTTP is :mod:`.app`'s business.

Both ciphertexts of a call are decrypted in one Transit batch and HMACed with
``ivr-lookup``; the account is found by the card verifier (at the latest key version, then
at older versions still in the store) and the PIN verifier is compared in constant time.
Everything the outcome implies (a wrong PIN counted, maybe a lock; earlier failures
cleared; a verifier re-made at the latest version; the answer remembered for a retry of
the same request) is written in one transaction, so that check, compare and record are
one decision.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import structlog

from service.backend.keycheck import LookupKeys
from service.backend.schema import LookupRequest
from service.errors import DecryptionError
from service.settings import Settings
from service.store.accounts import (
    Found,
    Lockout,
    Settlement,
    Store,
    card_input,
    pin_input,
    verifier_version,
)
from service.vault.formats import ciphertext_version, is_four_digits
from service.vault.transit import Transit, call_context
from service.web.access_log import annotate
from service.web.metrics import Metrics

log = structlog.get_logger("ivr.backend")

T = TypeVar("T")

IDEMPOTENCY_TTL_S = 15 * 60


class LookupOutcome(StrEnum):
    """What one lookup decided. The words are the access line's ``outcome`` and the
    ``ivr_lookups_total{outcome}`` label; :mod:`.app` maps each to its HTTP answer."""

    FOUND = "found"
    NOT_FOUND = "not_found"  # unknown card or wrong PIN: deliberately the same answer
    LOCKED = "locked"  # too many wrong PINs for this card
    UNDECRYPTABLE = "undecryptable"  # tampered, another call's, or a retired key version
    MALFORMED = "malformed"  # decrypted, but not two 4-digit entries


@dataclass(frozen=True)
class LookupResult:
    outcome: LookupOutcome
    account: str | None = None  # with FOUND only
    balance: str | None = None


# How the HTTP edge answers a result: (status, JSON body). The lookup remembers that answer
# in the same transaction as the result's other writes, so a retry gets the very same one.
Answer = Callable[[LookupResult], tuple[int, dict[str, Any]]]


async def verifiers(transit: Transit, last4: str, pin: str, *,
                    key_version: int | None = None) -> tuple[str, str]:
    """The card and PIN verifiers of an entry: what the store holds instead of digits."""
    card_v, pin_v = await transit.hmac([card_input(last4), pin_input(last4, pin)],
                                       key_version=key_version)
    return card_v, pin_v


def _entry(plaintext: bytes) -> str | None:
    text = plaintext.decode("ascii", "replace")
    return text if is_four_digits(text) else None


@dataclass
class Lookup:
    """The decision and what it needs, made once in the backend's lifespan."""

    settings: Settings
    transit: Transit
    store: Store
    metrics: Metrics
    executor: ThreadPoolExecutor  # for the store's blocking SQLite calls
    keys: LookupKeys | None = None  # the ivr-lookup canaries (keycheck.py)

    async def db(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    async def remembered(self, request_key: str) -> tuple[int, str] | None:
        """The answer already given to this request, if it is recent enough to be a retry."""
        return await self.db(self.store.remembered, request_key, time.time(),
                             IDEMPOTENCY_TTL_S)

    async def __call__(self, request: LookupRequest, answer: Answer,
                       request_key: str | None = None) -> LookupResult:
        """Decide. Raises :class:`~service.errors.VaultError` when Vault cannot answer:
        then nothing was decided and nothing written."""
        try:
            card_pt, pin_pt = await self.transit.decrypt([
                (request.card_last4, call_context(request.call_sid, "card_last4")),
                (request.pin, call_context(request.call_sid, "pin")),
            ])
        except DecryptionError:
            annotate(card_version=ciphertext_version(request.card_last4))
            return LookupResult(LookupOutcome.UNDECRYPTABLE)
        last4, pin = _entry(card_pt), _entry(pin_pt)
        if last4 is None or pin is None:
            return LookupResult(LookupOutcome.MALFORMED)

        found, pin_verifier, latest = await self._find(last4, pin)
        writes: dict[str, Any] = {}
        if found is None:
            result = LookupResult(LookupOutcome.NOT_FOUND)
        elif found.locked:
            result = LookupResult(LookupOutcome.LOCKED)
        elif not hmac.compare_digest(pin_verifier.encode(),
                                     found.account.pin_verifier.encode()):
            result = LookupResult(LookupOutcome.NOT_FOUND)
            self.metrics.wrong_pins.inc()
            writes.update(failed_account=found.account.id, lockout=Lockout(
                self.settings.lockout_window, self.settings.lockout_threshold,
                self.settings.lockout_duration))
        else:
            account = found.account
            result = LookupResult(LookupOutcome.FOUND, account.account, account.balance)
            if account.lookup_version < verifier_version(latest[0]):
                if self.keys is not None:  # the new version's canary, before its first use
                    await self.keys.record(verifier_version(latest[0]))
                writes.update(upgrade=(account.id, *latest))
                annotate(verifier_upgraded=True)
            if found.has_failures:
                writes.update(cleared_account=account.id)
        if await self._settle(result, answer, request_key, time.time(), writes):
            self.metrics.lockouts.labels("card").inc()
            log.warning("card locked after repeated wrong PINs", lookup_version=None)
        return result

    async def _find(self, last4: str, pin: str,
                    ) -> tuple[Found | None, str, tuple[str, str]]:
        """Find the account at the latest ``ivr-lookup`` version, then at older versions
        still in the store. Returns (account and its lock state, its PIN verifier at its
        version, latest verifiers)."""
        latest = await verifiers(self.transit, last4, pin)
        found = await self.db(self.store.find, latest[0], time.time())
        if found is not None:
            return found, latest[1], latest
        latest_version = verifier_version(latest[0])
        for version in await self.db(self.store.lookup_versions):
            if version >= latest_version:
                continue
            older = await verifiers(self.transit, last4, pin, key_version=version)
            found = await self.db(self.store.find, older[0], time.time())
            if found is not None:
                return found, older[1], latest
        return None, "", latest

    async def _settle(self, result: LookupResult, answer: Answer, request_key: str | None,
                      now: float, writes: dict[str, Any]) -> bool:
        """Write what this result implies (and its answer, for a retry of the same
        request) in one transaction on one pool hop; none when there is nothing to write.
        Returns True when a wrong PIN locked the account."""
        remembered = None
        if request_key:
            status, body = answer(result)
            remembered = (status, json.dumps(body))
        settlement = Settlement(now, request_key=request_key, answer=remembered,
                                answer_ttl=IDEMPOTENCY_TTL_S, **writes)
        if settlement.is_empty():
            return False
        return await self.db(self.store.settle, settlement)
