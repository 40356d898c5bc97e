"""A caller number's failed lookups, from an operator's side: ``ivr-vault callers reset``.

A number is counted by its keyed HMAC (``HMAC(ivr-lookup, "caller:" + number)``,
:func:`~service.store.identity.caller_input`) at the latest key version, as the lookup
counts it; only the backend's identity (or an operator token with its policy) may make
that HMAC: the key-admin may not. The number is never stored, logged or printed; the log
line names it as the lookup's do, by ``caller_fp``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog

from service.backend.policy import LockoutPolicy
from service.errors import BadInput
from service.formats import ANONYMOUS_CALLER, caller_bucket
from service.logs.scrubbing import fingerprint
from service.settings import Settings
from service.store.accounts import Store
from service.store.identity import caller_input
from service.vault.client import VaultClient
from service.vault.session import transit_session
from service.web.metrics import Metrics

log = structlog.get_logger("ivr.callers")


@dataclass(frozen=True)
class CallerReset:
    caller_fp: str  # the fingerprint of the number's HMAC, as the lookup's log lines have it
    forgotten: int  # failed lookups forgotten (those in the window and any not yet swept)
    was_cut_off: bool


def caller_number(text: str) -> str:
    """The bucket an operator means: an E.164 number, a ``client:``/``sip:`` identity, or
    ``anonymous`` (every withheld number's shared count). Anything else is refused rather
    than quietly taken for ``anonymous``, as a call's ``From`` would be."""
    bucket = caller_bucket(text)
    if bucket == ANONYMOUS_CALLER and text.strip().lower() != ANONYMOUS_CALLER:
        raise BadInput(
            "caller number: expected E.164 (+ and up to 15 digits), client:NAME, "
            "sip:URI or anonymous"
        )
    return bucket


def reset_caller(
    settings: Settings, number: str, *, vault: VaultClient | None = None
) -> CallerReset:
    """Forget ``number``'s failed lookups (already :func:`caller_number`'s bucket)."""

    async def hmac() -> str:
        async with transit_session(settings, Metrics(), threads=2, vault=vault) as transit:
            (caller_v,) = await transit.hmac([caller_input(number)])
            return caller_v

    caller_v = asyncio.run(hmac())
    # Withheld numbers share one bucket with its own limit and window, as the lookup has it.
    limit, window = LockoutPolicy.from_settings(settings).caller_bucket(
        withheld=number == ANONYMOUS_CALLER
    )
    store = Store(settings.store)
    try:
        recent = store.transaction(
            lambda ledger: ledger.caller_failures(caller_v, time.time() - window)
        )
        forgotten = store.reset_caller(caller_v)
    finally:
        store.close()
    done = CallerReset(fingerprint(caller_v), forgotten, recent >= limit)
    log.warning(
        "caller number's failed lookups reset by an operator",
        caller_fp=done.caller_fp,
        was_cut_off=done.was_cut_off,
    )
    return done


def cut_off_now(store: Store, settings: Settings) -> int:
    """How many caller numbers are cut off at this moment."""
    policy = LockoutPolicy.from_settings(settings)
    return store.cut_off_callers(time.time() - policy.caller_window, policy.caller_limit)
