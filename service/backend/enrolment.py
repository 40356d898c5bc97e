"""Provisioning accounts: verifiers made by Transit HMAC, stored; digits never stored.

Every enrolment refuses a weak PIN (:mod:`.pin_rules`), with one exception:
:func:`seed_demo`, the tutorial's demo account, whose PIN 4321 is itself weak. Only
``make run`` and the dev compose seed it; nothing meant for production does.

Before it writes, enrolment checks the store's ``ivr-lookup`` canaries against this Vault
(:mod:`service.backend.keycheck`): an account added under a Vault that cannot reproduce
the others would work while every older one silently failed. It records the canary of the
version it uses, if that version is new to the store.
"""

from __future__ import annotations

import asyncio
import time

from service.backend.keycheck import CANARY_INPUT, KeyCheck, check_keys
from service.backend.pin_rules import weakness
from service.errors import EnrolmentRefused
from service.settings import Settings
from service.store.accounts import Store, card_input, pin_input
from service.vault.client import VaultClient
from service.vault.session import transit_session
from service.web.metrics import Metrics

DEMO_ACCOUNT = ("AC12345678", "12.55")
DEMO_CARD, DEMO_PIN = "1234", "4321"  # the tutorial's test account


def add_account(
    settings: Settings,
    *,
    account: str,
    balance: str,
    last4: str,
    pin: str,
    vault: VaultClient | None = None,
) -> None:
    """Runs with the backend identity (HMAC with ``ivr-lookup``), or an operator token.
    Raises :class:`EnrolmentRefused` for a weak PIN, before anything reaches Vault, and
    :class:`~service.errors.LookupKeyMismatch` when this Vault cannot reproduce the
    store's canaries; either way nothing is written."""
    why = weakness(pin)
    if why is not None:
        raise EnrolmentRefused(f"PIN refused: {why}; choose another")
    _enrol(settings, account, balance, last4, pin, vault=vault)


def seed_demo(settings: Settings, *, vault: VaultClient | None = None) -> str:
    """The demo account (card 1234, PIN 4321), for development only: the one enrolment
    that skips the weak-PIN rule, and only for these constants. Only when the store has
    no account of that name: a store with data in it is never written over. Returns the
    line that says which."""
    store = Store(settings.store)
    try:
        present = store.has_account(DEMO_ACCOUNT[0])
    finally:
        store.close()
    if present:
        return f"demo account {DEMO_ACCOUNT[0]} already in the store; not seeded again"
    _enrol(settings, *DEMO_ACCOUNT, DEMO_CARD, DEMO_PIN, vault=vault)
    return f"demo account {DEMO_ACCOUNT[0]} provisioned (development only: its PIN is weak)"


def _enrol(
    settings: Settings,
    account: str,
    balance: str,
    last4: str,
    pin: str,
    *,
    vault: VaultClient | None,
) -> None:
    store = Store(settings.store)
    try:

        async def made() -> tuple[str, str, str]:
            async with transit_session(settings, Metrics(), threads=2, vault=vault) as transit:
                # One Transit call: the verifiers and the canary at the same key version.
                card_v, pin_v, canary = await transit.hmac(
                    [card_input(last4), pin_input(last4, pin), CANARY_INPUT]
                )
                check = await check_keys(
                    transit, settings.lookup_key, store.canaries(), store.lookup_versions()
                )
                if not check.ok:
                    raise check.error()
                return card_v, pin_v, canary

        card_v, pin_v, canary = asyncio.run(made())
        store.add_canary(canary, time.time())
        store.upsert_account(account, balance, card_v, pin_v)
    finally:
        store.close()


def check_store_keys(
    settings: Settings, *, adopt: bool = False, vault: VaultClient | None = None
) -> KeyCheck:
    """The backend's start-up check, on demand (``ivr-vault accounts check-keys``). With
    ``adopt``, versions stored verifiers use without a canary (a store made before
    canaries) get this Vault's: only for an operator who knows this Vault made them.
    A canary that does not match is never replaced."""
    store = Store(settings.store)
    try:

        async def checked() -> KeyCheck:
            async with transit_session(settings, Metrics(), threads=2, vault=vault) as transit:
                check = await check_keys(
                    transit, settings.lookup_key, store.canaries(), store.lookup_versions()
                )
                if adopt and check.unguarded and not check.mismatched:
                    for version in check.unguarded:
                        (canary,) = await transit.hmac([CANARY_INPUT], key_version=version)
                        store.add_canary(canary, time.time())
                    check = await check_keys(
                        transit, settings.lookup_key, store.canaries(), store.lookup_versions()
                    )
                return check

        return asyncio.run(checked())
    finally:
        store.close()
