"""Provisioning accounts: verifiers made by Transit HMAC, stored; digits never stored.

Every enrolment refuses a weak PIN (:mod:`.pin_rules`), with one exception:
:func:`seed_demo`, the tutorial's demo account, whose PIN 4321 is itself weak. Only
``make run`` and the dev compose seed it; nothing meant for production does.
"""

from __future__ import annotations

import asyncio

from service.backend.lookup import verifiers
from service.backend.pin_rules import weakness
from service.errors import EnrolmentRefused
from service.settings import Settings
from service.store.accounts import Store
from service.vault.client import VaultClient
from service.vault.session import transit_session
from service.web.metrics import Metrics

DEMO_ACCOUNT = ("AC12345678", "12.55")
DEMO_CARD, DEMO_PIN = "1234", "4321"  # the tutorial's test account


def add_account(settings: Settings, *, account: str, balance: str, last4: str, pin: str,
                vault: VaultClient | None = None) -> None:
    """Runs with the backend identity (HMAC with ``ivr-lookup``), or an operator token.
    Raises :class:`EnrolmentRefused` for a weak PIN, before anything reaches Vault."""
    why = weakness(pin)
    if why is not None:
        raise EnrolmentRefused(f"PIN refused: {why}; choose another")
    _enrol(settings, account, balance, last4, pin, vault=vault)


def seed_demo(settings: Settings, *, vault: VaultClient | None = None) -> None:
    """The demo account (card 1234, PIN 4321), for development only: the one enrolment
    that skips the weak-PIN rule, and only for these constants."""
    _enrol(settings, *DEMO_ACCOUNT, DEMO_CARD, DEMO_PIN, vault=vault)


def _enrol(settings: Settings, account: str, balance: str, last4: str, pin: str, *,
           vault: VaultClient | None) -> None:
    async def made() -> tuple[str, str]:
        async with transit_session(settings, Metrics(), threads=2, vault=vault) as transit:
            return await verifiers(transit, last4, pin)

    card_v, pin_v = asyncio.run(made())
    store = Store(settings.store_path)
    try:
        store.upsert_account(account, balance, card_v, pin_v)
    finally:
        store.close()
