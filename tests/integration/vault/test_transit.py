"""Transit (async, batched, sent on the event loop; the thread pool only logs in and renews)
on the real Vault, each side with its own AppRole: the webhook encrypts, the backend
decrypts and HMACs."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import pytest

from service.devtools.devstack import DevVault
from service.errors import DecryptionError, VaultError, VaultTimeout
from service.formats import ciphertext_version
from service.settings import Secret
from service.store.accounts import verifier_version
from service.vault.bootstrap import RoleCredentials
from service.vault.client import VaultClient
from service.vault.transit import Transit, call_context
from service.web.metrics import Metrics
from tests.support.stack import role_client

SID_A = "CA" + "a" * 32
SID_B = "CA" + "b" * 32


@asynccontextmanager
async def transit_for(
    vault: VaultClient,
    metrics: Metrics | None = None,
) -> AsyncIterator[Transit]:
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="test-vault")
    transit = Transit(
        vault,
        mount="transit",
        dtmf_key="ivr-dtmf",
        lookup_key="ivr-lookup",
        executor=executor,
        metrics=metrics,
    )
    try:
        yield transit
    finally:
        await transit.aclose()
        executor.shutdown(wait=True)
        vault.close()


@pytest.fixture
def webhook_vault(dev_vault: DevVault, credentials: dict[str, RoleCredentials]) -> VaultClient:
    return role_client(dev_vault, credentials["ivr-webhook"])


@pytest.fixture
def backend_vault(dev_vault: DevVault, credentials: dict[str, RoleCredentials]) -> VaultClient:
    return role_client(dev_vault, credentials["ivr-backend"])


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


@pytest.mark.anyio
async def test_round_trip_across_identities(
    webhook_vault: VaultClient, backend_vault: VaultClient
) -> None:
    async with transit_for(webhook_vault) as webhook, transit_for(backend_vault) as backend:
        card = await webhook.encrypt(b"1234", call_context(SID_A, "card_last4"))
        pin = await webhook.encrypt(b"4321", call_context(SID_A, "pin"))
        assert card.key_version == ciphertext_version(card.ciphertext)
        assert b"1234" not in card.ciphertext.encode()
        assert await backend.decrypt(
            [
                (card.ciphertext, call_context(SID_A, "card_last4")),
                (pin.ciphertext, call_context(SID_A, "pin")),
            ]
        ) == [b"1234", b"4321"]
        # Same digits, same call: a fresh nonce, a different ciphertext.
        again = await webhook.encrypt(b"1234", call_context(SID_A, "card_last4"))
        assert again.ciphertext != card.ciphertext
        for wrong in (call_context(SID_B, "card_last4"), call_context(SID_A, "pin")):
            with pytest.raises(DecryptionError):
                await backend.decrypt([(card.ciphertext, wrong)])
        tampered = (
            card.ciphertext[:-6]
            + ("AAAA" if card.ciphertext[-6:-2] != "AAAA" else "BBBB")
            + card.ciphertext[-2:]
        )
        with pytest.raises(DecryptionError):
            await backend.decrypt([(tampered, call_context(SID_A, "card_last4"))])


@pytest.mark.anyio
async def test_a_malformed_ciphertext_never_reaches_vault(backend_vault: VaultClient) -> None:
    metrics = Metrics()
    async with transit_for(backend_vault, metrics) as backend:
        with pytest.raises(DecryptionError):
            await backend.decrypt([("not-a-ciphertext", b"ctx"), ("vault:v1:QUJD", b"ctx")])
    assert counter(metrics, "ivr_transit_http_calls_total", operation="decrypt") == 0


@pytest.mark.anyio
async def test_concurrent_requests_share_batches_and_fail_alone(
    webhook_vault: VaultClient, backend_vault: VaultClient
) -> None:
    metrics = Metrics()
    async with (
        transit_for(webhook_vault, metrics) as webhook,
        transit_for(backend_vault, metrics) as backend,
    ):
        sids = [f"CA{i:032x}" for i in range(40)]
        encrypted = await asyncio.gather(
            *(
                webhook.encrypt(f"{i:04d}".encode(), call_context(sid, "pin"))
                for i, sid in enumerate(sids)
            )
        )
        calls = counter(metrics, "ivr_transit_http_calls_total", operation="encrypt")
        assert 1 <= calls < 40 / 2
        # One forged item in the same batch fails only its own caller.
        results = await asyncio.gather(
            *(
                backend.decrypt([(e.ciphertext, call_context(sid if i != 7 else SID_B, "pin"))])
                for i, (e, sid) in enumerate(zip(encrypted, sids, strict=True))
            ),
            return_exceptions=True,
        )
        assert isinstance(results[7], DecryptionError)
        assert [r for i, r in enumerate(results) if i != 7] == [
            [f"{i:04d}".encode()] for i in range(40) if i != 7
        ]
        assert counter(metrics, "ivr_transit_http_calls_total", operation="decrypt") < 20


@pytest.mark.anyio
async def test_hmac_is_deterministic_and_versioned(backend_vault: VaultClient) -> None:
    async with transit_for(backend_vault) as backend:
        first = await backend.hmac([b"card:1234", b"pin:1234:4321"])
        assert first == await backend.hmac([b"card:1234", b"pin:1234:4321"])
        assert first[0] != first[1]
        assert all(v.startswith("vault:v") for v in first)
        version = verifier_version(first[0])
        assert await backend.hmac([b"card:1234"], key_version=version) == first[:1]


@pytest.mark.anyio
async def test_a_hung_vault_never_blocks_the_event_loop() -> None:
    """The login blocks (hvac's transport) and runs in the thread pool; the batch itself is
    sent on the loop. While the call hangs, the event loop keeps ticking, and the caller
    gets VaultTimeout, not a DecryptionError."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepted by the kernel, never answered
        vault = VaultClient(
            f"http://127.0.0.1:{listener.getsockname()[1]}", Secret("t"), timeout=0.6
        )

        started = time.monotonic()
        ticks = 0
        async with transit_for(vault) as transit:
            task = asyncio.ensure_future(transit.decrypt([("vault:v1:QUJD", b"ctx")]))
            while not task.done():
                ticks += 1
                await asyncio.sleep(0.01)
            error = task.exception()
            assert error is not None
    assert isinstance(error, VaultTimeout) and isinstance(error, VaultError)
    assert ticks >= 20
    assert time.monotonic() - started < 3


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.submitted = 0

    def submit(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        self.submitted += 1
        return super().submit(*args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_batches_go_out_on_the_event_loop_without_a_thread_hop(
    webhook_vault: VaultClient, backend_vault: VaultClient
) -> None:
    """After the login, encrypt, decrypt and HMAC batches never touch the thread pool:
    the pool is for logging in and renewing (and the backend's SQLite) only."""
    pools = {"webhook": CountingExecutor(), "backend": CountingExecutor()}
    webhook = Transit(
        webhook_vault,
        mount="transit",
        dtmf_key="ivr-dtmf",
        lookup_key="ivr-lookup",
        executor=pools["webhook"],
    )
    backend = Transit(
        backend_vault,
        mount="transit",
        dtmf_key="ivr-dtmf",
        lookup_key="ivr-lookup",
        executor=pools["backend"],
    )
    try:
        first = await webhook.encrypt(b"1234", call_context(SID_A, "pin"))  # logs in
        await backend.decrypt([(first.ciphertext, call_context(SID_A, "pin"))])
        logins = {name: pool.submitted for name, pool in pools.items()}
        assert logins == {"webhook": 1, "backend": 1}
        cts = await asyncio.gather(
            *(webhook.encrypt(b"1234", call_context(SID_A, "pin")) for _ in range(50))
        )
        await asyncio.gather(
            *(backend.decrypt([(c.ciphertext, call_context(SID_A, "pin"))]) for c in cts)
        )
        await backend.hmac([b"card:1234", b"pin:1234:4321"])
        assert {name: pool.submitted for name, pool in pools.items()} == logins
    finally:
        await webhook.aclose()
        await backend.aclose()
        for pool in pools.values():
            pool.shutdown()
