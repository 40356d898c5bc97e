"""Provisioning accounts: verifiers made by Transit HMAC, stored; digits never stored."""

from __future__ import annotations

import asyncio

from service.backend.lookup import verifiers
from service.settings import Settings
from service.store.accounts import Store
from service.vault.client import VaultClient
from service.vault.session import transit_session
from service.web.metrics import Metrics

DEMO_ACCOUNT = ("AC12345678", "12.55")
DEMO_CARD, DEMO_PIN = "1234", "4321"  # the tutorial's test account


def add_account(settings: Settings, *, account: str, balance: str, last4: str, pin: str,
                vault: VaultClient | None = None) -> None:
    """Runs with the backend identity (HMAC with ``ivr-lookup``), or an operator token."""

    async def made() -> tuple[str, str]:
        async with transit_session(settings, Metrics(), threads=2, vault=vault) as transit:
            return await verifiers(transit, last4, pin)

    card_v, pin_v = asyncio.run(made())
    store = Store(settings.store_path)
    try:
        store.upsert_account(account, balance, card_v, pin_v)
    finally:
        store.close()
