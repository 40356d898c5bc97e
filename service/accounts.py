"""Provisioning accounts: verifiers made by Transit HMAC, stored; digits never stored."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from .settings import Settings
from .store import Store, card_input, pin_input
from .transit import Transit
from .vault_client import VaultClient

DEMO_ACCOUNT = ("AC12345678", "12.55")
DEMO_CARD, DEMO_PIN = "1234", "4321"  # the tutorial's test account


async def _verifiers(transit: Transit, last4: str, pin: str) -> tuple[str, str]:
    card_v, pin_v = await transit.hmac([card_input(last4), pin_input(last4, pin)])
    return card_v, pin_v


def add_account(settings: Settings, *, account: str, balance: str, last4: str, pin: str,
                vault: VaultClient | None = None) -> None:
    """Runs with the backend identity (HMAC with ``ivr-lookup``), or an operator token."""
    vault = vault or VaultClient.from_settings(settings, pool_size=2)
    with ThreadPoolExecutor(max_workers=2) as executor:
        transit = Transit(vault, mount=settings.transit_mount, dtmf_key=settings.dtmf_key,
                          lookup_key=settings.lookup_key, executor=executor)

        async def run() -> tuple[str, str]:
            try:
                return await _verifiers(transit, last4, pin)
            finally:
                await transit.aclose()

        card_v, pin_v = asyncio.run(run())
    Store(settings.store_path).upsert_account(account, balance, card_v, pin_v)
