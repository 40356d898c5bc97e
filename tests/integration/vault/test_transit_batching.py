"""Transit batching against a REAL dev Vault: coalescing, per-item failure isolation, Vault
dying mid-batch, flush on close.

The coalescer's scheduling has its own unit tests (tests/unit/vault/test_coalescer.py);
these prove the same properties hold end to end, counted by the service's own metric
``ivr_transit_http_calls_total``.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from service.devtools.devstack import DevVault
from service.errors import CoalescerClosed, DecryptionError, VaultError
from service.vault.bootstrap import Layout, RoleCredentials, bootstrap
from service.vault.client import VaultClient
from service.vault.transit import Transit, call_context
from service.web.metrics import Metrics
from tests.support.stack import role_client

# A scheduling bug fails, it does not hang the suite.
pytestmark = pytest.mark.timeout(180)


def http_calls(metrics: Metrics, operation: str) -> float:
    value = metrics.registry.get_sample_value(
        "ivr_transit_http_calls_total", {"operation": operation}
    )
    return value or 0.0


def items_sent(metrics: Metrics, operation: str) -> float:
    value = metrics.registry.get_sample_value("ivr_transit_items_total", {"operation": operation})
    return value or 0.0


def vault_errors(metrics: Metrics) -> float:
    return sum(
        sample.value
        for metric in metrics.vault_errors.collect()
        for sample in metric.samples
        if sample.name == "ivr_vault_errors_total"
    )


@contextmanager
def transit_for(vault: VaultClient, layout: Layout, **kwargs: int) -> Iterator[Transit]:
    executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="test-vault")
    try:
        yield Transit(
            vault,
            mount=layout.mount,
            dtmf_key="ivr-dtmf",
            lookup_key="ivr-lookup",
            executor=executor,
            metrics=Metrics(),
            **kwargs,
        )
    finally:
        executor.shutdown(wait=True)
        vault.close()


def sid() -> str:
    return "CA" + secrets.token_hex(16)


@pytest.mark.anyio
async def test_concurrent_calls_share_few_vault_calls_and_keep_order(
    dev_vault: DevVault, layout: Layout, credentials: dict[str, RoleCredentials]
) -> None:
    n = 200
    calls = [(sid(), f"{i:04d}".encode()) for i in range(n)]
    webhook_vault = role_client(dev_vault, credentials["ivr-webhook"])
    backend_vault = role_client(dev_vault, credentials["ivr-backend"])
    with (
        transit_for(webhook_vault, layout) as webhook,
        transit_for(backend_vault, layout) as backend,
    ):
        await webhook.encrypt(b"0000", b"warm:up")  # login outside the measured part
        before = http_calls(webhook._metrics, "encrypt")
        encrypted = await asyncio.gather(
            *(webhook.encrypt(digits, call_context(call, "card_last4")) for call, digits in calls)
        )
        sent = http_calls(webhook._metrics, "encrypt") - before
        # 200 concurrent callers; one HTTP call each would be 200.
        assert 1 <= sent <= 8, sent
        # Each caller got its own ciphertext back: it decrypts, under its own call's
        # context, to its own digits.
        plain = await asyncio.gather(
            *(
                backend.decrypt([(enc.ciphertext, call_context(call, "card_last4"))])
                for enc, (call, _) in zip(encrypted, calls, strict=True)
            )
        )
        assert [p[0] for p in plain] == [digits for _, digits in calls]
        assert http_calls(backend._metrics, "decrypt") <= 8

        # HMAC coalesces too: a lookup's (card, PIN) pair is one group, and a
        # coalesced answer equals the answer of a lone call at the explicit version.
        pairs = [(f"card:{i:04d}".encode(), f"pin:{i:04d}".encode()) for i in range(60)]
        before = http_calls(backend._metrics, "hmac")
        together = await asyncio.gather(*(backend.hmac(list(p)) for p in pairs))
        assert http_calls(backend._metrics, "hmac") - before <= 4
        version = int(together[0][0].split(":")[1].removeprefix("v"))
        alone = [await backend.hmac(list(p), key_version=version) for p in pairs[:5]]
        assert together[:5] == alone
        assert len({v for pair in together for v in pair}) == 120


@pytest.mark.anyio
async def test_bad_ciphertext_fails_only_its_own_caller(
    dev_vault: DevVault, layout: Layout, credentials: dict[str, RoleCredentials]
) -> None:
    webhook_vault = role_client(dev_vault, credentials["ivr-webhook"])
    backend_vault = role_client(dev_vault, credentials["ivr-backend"])
    with (
        transit_for(webhook_vault, layout) as webhook,
        transit_for(backend_vault, layout) as backend,
    ):
        calls = [sid() for _ in range(12)]
        cts = await asyncio.gather(
            *(webhook.encrypt(b"4321", call_context(c, "pin")) for c in calls)
        )
        # Well-formed but wrong: another call's ciphertext under this call's context
        # (a replay), and one with its GCM tag flipped (tampered).
        replayed = (cts[0].ciphertext, call_context(calls[1], "pin"))
        prefix, body = cts[2].ciphertext.rsplit(":", 1)
        raw = bytearray(base64.b64decode(body))
        raw[-1] ^= 1
        tampered = (
            f"{prefix}:{base64.b64encode(bytes(raw)).decode()}",
            call_context(calls[2], "pin"),
        )
        await backend.decrypt([(cts[3].ciphertext, call_context(calls[3], "pin"))])  # login
        before = http_calls(backend._metrics, "decrypt")
        groups = [
            [(ct.ciphertext, call_context(c, "pin"))] for ct, c in zip(cts, calls, strict=True)
        ]
        groups[1], groups[2] = [replayed], [tampered]
        results = await asyncio.gather(
            *(backend.decrypt(g) for g in groups), return_exceptions=True
        )
        # All of them in one Vault call, which Vault answered with HTTP 400...
        assert http_calls(backend._metrics, "decrypt") - before == 1
        # ...yet only the two bad callers failed, each with an opaque DecryptionError.
        assert isinstance(results[1], DecryptionError)
        assert isinstance(results[2], DecryptionError)
        good = [r for i, r in enumerate(results) if i not in (1, 2)]
        assert good == [[b"4321"]] * 10


@pytest.mark.anyio
async def test_vault_dying_mid_batch_fails_only_that_batch(tmp_path: Path) -> None:
    vault = DevVault.start(tmp_path / "vault")
    try:
        layout = bootstrap(VaultClient(vault.addr, vault.root_token, timeout=10))
        # The root token: this test is about the batching client, not about identities.
        client = VaultClient(vault.addr, vault.root_token, timeout=5)
        with transit_for(client, layout, max_in_flight=1) as transit:
            await transit.encrypt(b"1234", b"warm:up")
            vault.pause()  # the next batch reaches Vault and hangs there
            doomed = [
                asyncio.ensure_future(transit.encrypt(b"1234", call_context(sid(), "card")))
                for _ in range(10)
            ]
            # The warm-up and all ten doomed items have left the queue for Vault.
            while items_sent(transit._metrics, "encrypt") < 11:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # the request is on the wire
            assert vault.process is not None
            vault.process.kill()  # dies with the batch in flight
            results = await asyncio.gather(*doomed, return_exceptions=True)
            assert all(isinstance(r, VaultError) for r in results), results
            assert vault_errors(transit._metrics) >= 1
            vault.process.wait()
            vault.restart()  # the same address, data and root token, unsealed again

            # Same Transit, same pool: the dead connections are replaced, nothing stuck.
            fresh = await asyncio.gather(
                *(transit.encrypt(b"1234", call_context(sid(), "card")) for _ in range(20))
            )
            assert all(r.ciphertext.startswith("vault:v1:") for r in fresh)
    finally:
        vault.stop()


@pytest.mark.anyio
async def test_aclose_sends_everything_queued_then_refuses(
    dev_vault: DevVault, layout: Layout, credentials: dict[str, RoleCredentials]
) -> None:
    vault = role_client(dev_vault, credentials["ivr-webhook"])
    with transit_for(vault, layout, max_in_flight=1) as transit:
        await transit.encrypt(b"0000", b"warm:up")
        tasks = [
            asyncio.ensure_future(transit.encrypt(b"5678", call_context(sid(), "pin")))
            for _ in range(300)
        ]  # more than one batch (MAX_BATCH is 128)
        await asyncio.sleep(0)  # the first batch leaves; the rest is queued
        await transit.aclose()
        # Closing waited for every queued item to be sent and answered.
        assert all(t.done() for t in tasks)
        assert all(t.result().ciphertext.startswith("vault:v") for t in tasks)
        assert http_calls(transit._metrics, "encrypt") >= 3
        with pytest.raises(CoalescerClosed):
            await transit.encrypt(b"5678", b"late")
