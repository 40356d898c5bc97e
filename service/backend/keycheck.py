"""The ``ivr-lookup`` canary: does the connected Vault hold the key versions the store needs?

The store's verifiers are HMACs under ``ivr-lookup``. A Vault that does not hold those key
versions (its data lost, a fresh dev Vault, ``VAULT_ADDR`` pointed at another Vault) makes
different verifiers, and every caller would hear "not found" with nothing in any log. So
the store keeps a canary for every version a stored verifier has used: the HMAC of
:data:`CANARY_INPUT`, a fixed label and never caller data, under that version. It is
written when the version is first used (enrolment, a verifier upgrade) and checked by
enrolment before it writes, and by the backend at start-up, in every ``/readyz`` and
before the first lookup. A mismatch is one error line naming ``ivr-lookup`` and the way
out; the backend stays unready and answers lookups 503 (the caller hears "please call
again later"), never a silent "not found".
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog

from service.errors import LookupKeyMismatch, VaultRequestError
from service.store.accounts import Store, verifier_version

log = structlog.get_logger("ivr.backend")

T = TypeVar("T")

# The label the canary HMACs. Caller inputs are "card:<4 digits>" and "pin:<4>:<4>"
# (store/accounts.py), so no caller input can equal it.
CANARY_INPUT = b"canary:ivr-lookup"
WAY_OUT = "docs/backup.md#restore"
# While the check fails, a lookup re-checks at most this often (a Vault restored under a
# running backend is noticed without waiting for a /readyz).
RECHECK_S = 5.0


class Hmac(Protocol):
    """What the check and :func:`~service.backend.enrolment.make_records` need of
    :class:`~service.vault.transit.Transit` (which the unit tests' fake also provides)."""

    async def hmac(
        self,
        inputs: Sequence[bytes],
        *,
        key_version: int | None = None,
    ) -> list[str]: ...


@dataclass(frozen=True)
class KeyCheck:
    """The outcome. ``latest`` is the canary of the key's latest version, as this Vault
    makes it now; ``mismatched`` the versions whose recorded canary it does not reproduce;
    ``unguarded`` the versions stored verifiers use with no canary recorded (a store made
    before canaries existed): nothing proves this Vault made those."""

    key: str
    latest: str
    mismatched: tuple[int, ...] = ()
    unguarded: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.mismatched and not self.unguarded

    def error(self) -> LookupKeyMismatch:
        """One line: what happened and the way out. No digits in it (the log scrubber
        would mask them): the first version concerned goes in the ``key_version`` field."""
        if self.mismatched:
            return LookupKeyMismatch(
                f"{self.key}: this Vault cannot reproduce the account store's canary, so the "
                f"store's verifiers were made with {self.key} key versions this Vault does "
                "not hold (another Vault, or this one before its data was lost) and no "
                "caller would be found; restore Vault from the backup that matches this "
                f"store: {WAY_OUT}"
            )
        return LookupKeyMismatch(
            f"{self.key}: the account store's verifiers have no canary (a store made before "
            "canaries), so nothing shows that this Vault made them; restore Vault from the "
            f"backup that matches this store ({WAY_OUT}), or, if this Vault did make them, "
            "record its canaries: ivr-vault accounts check-keys --adopt"
        )

    @property
    def first_version(self) -> int | None:
        versions = self.mismatched or self.unguarded
        return versions[0] if versions else None


async def check_keys(
    transit: Hmac, key: str, canaries: Mapping[int, str], versions_in_use: Iterable[int]
) -> KeyCheck:
    """Reproduce the canary of every version stored verifiers use (and of the latest
    version, when one is recorded) and compare. One Transit call at the latest version,
    which also proves the key usable; one more per older version in use. Raises
    :class:`~service.errors.VaultError` when Vault cannot answer at all."""
    (latest,) = await transit.hmac([CANARY_INPUT])
    latest_version = verifier_version(latest)
    in_use = set(versions_in_use)
    mismatched = []
    for version in sorted(in_use | ({latest_version} & set(canaries))):
        recorded = canaries.get(version)
        if recorded is None:
            continue
        if version == latest_version:
            made = latest
        else:
            try:
                (made,) = await transit.hmac([CANARY_INPUT], key_version=version)
            except VaultRequestError:  # "invalid key version": this Vault never had it
                mismatched.append(version)
                continue
        if not hmac.compare_digest(made.encode(), recorded.encode()):
            mismatched.append(version)
    unguarded = tuple(sorted(in_use - set(canaries)))
    return KeyCheck(key, latest, tuple(mismatched), unguarded)


@dataclass
class LookupKeys:
    """The backend's canary state, made in its lifespan: checked at start-up, by every
    ``/readyz``, and by a lookup while it is unknown or failed; a mismatch is logged once
    (one error line), a recovery once."""

    transit: Hmac
    store: Store
    executor: ThreadPoolExecutor
    key: str
    clock: Callable[[], float] = time.monotonic
    _last: KeyCheck | None = None
    _checked_at: float = 0.0
    _recorded: set[int] = field(default_factory=set)

    async def _db(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    async def check(self) -> KeyCheck:
        canaries = await self._db(self.store.canaries)
        versions = await self._db(self.store.lookup_versions)
        result = await check_keys(self.transit, self.key, canaries, versions)
        if not result.ok and (self._last is None or self._last.ok):
            log.error(str(result.error()), key_version=result.first_version)
        elif result.ok and self._last is not None and not self._last.ok:
            log.info(f"{self.key}: the account store's canaries match this Vault again")
        self._last, self._checked_at = result, self.clock()
        return result

    async def usable(self) -> bool:
        """May a lookup trust a "not found"? Known good: yes, without a Vault call.
        Unknown (Vault was away at start-up) or failed a while ago: check now."""
        last = self._last
        if last is not None and (last.ok or self.clock() - self._checked_at < RECHECK_S):
            return last.ok
        return (await self.check()).ok

    async def record(self, version: int) -> None:
        """A verifier is about to be stored under ``version``: make sure its canary is."""
        if version in self._recorded:
            return
        if version not in await self._db(self.store.canaries):
            (canary,) = await self.transit.hmac([CANARY_INPUT], key_version=version)
            await self._db(self.store.add_canary, canary, time.time())
        self._recorded.add(version)
