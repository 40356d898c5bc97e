"""Asynchronous Transit: encrypt, decrypt and HMAC, batched, on the event loop.

Batches go out through :class:`~service.vault.async_client.AsyncVault` (aiohttp, no thread
hop); the blocking :class:`~service.vault.client.VaultClient` logs in and renews in the
thread pool when that is due. Concurrent requests are coalesced into Transit
``batch_input`` calls by :class:`~service.vault.coalescer.Coalescer`: an idle service sends
at once, a busy one sends what queued while the previous batch was in flight.
A failed item fails only its own caller.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator, Sequence, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from service.errors import DecryptionError, ItemFailed, VaultError, VaultRequestError
from service.formats import ciphertext_version
from service.vault.async_client import AsyncVault
from service.vault.batch import BatchAnswer, batch_results
from service.vault.client import VaultClient
from service.vault.coalescer import Coalescer
from service.web.metrics import Metrics

# The listener's max_request_json_strings=1000 counts keys and values: about 249 items of
# plaintext+context. Stay well below so that a larger context never tips a batch over.
MAX_BATCH = 128


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def call_context(call_sid: str, field: str) -> bytes:
    """The derivation context that binds a ciphertext to one call and one field."""
    return f"{call_sid}:{field}".encode()


@dataclass(frozen=True)
class Encrypted:
    ciphertext: str
    key_version: int


@dataclass(frozen=True)
class _DecryptItem:
    ciphertext: str
    context: bytes


def _hmac_value(result: dict[str, Any]) -> str:
    if "error" in result or "hmac" not in result:
        raise VaultRequestError("hmac: Transit refused an item")
    return str(result["hmac"])


def _per_group(
    groups: Sequence[Sized],
    results: list[dict[str, Any]],
) -> Iterator[list[dict[str, Any]]]:
    """Cut one flat batch result back into the groups that were flattened into it."""
    position = 0
    for group in groups:
        yield results[position : position + len(group)]
        position += len(group)


class Transit:
    """Transit operations for one identity. Create in a lifespan, ``aclose()`` on exit."""

    def __init__(
        self,
        vault: VaultClient,
        *,
        mount: str,
        dtmf_key: str,
        lookup_key: str,
        executor: ThreadPoolExecutor,
        metrics: Metrics | None = None,
        max_batch: int = MAX_BATCH,
        max_in_flight: int = 2,
        linger: float = 0.0,
    ) -> None:
        self.vault = vault
        self._mount = mount
        self._dtmf_key = dtmf_key
        self._lookup_key = lookup_key
        self._executor = executor
        self._http = AsyncVault(vault, executor=executor)
        self._metrics = metrics or Metrics()
        self._encrypts: Coalescer[tuple[bytes, bytes], Encrypted] = Coalescer(
            self._send_encrypts,
            max_batch=max_batch,
            max_in_flight=max_in_flight,
            name="encrypt",
            linger=linger,
        )
        # A lookup's card and PIN travel as one group so that they share one Vault call.
        self._decrypts: Coalescer[tuple[_DecryptItem, ...], list[bytes]] = Coalescer(
            self._send_decrypts,
            max_batch=max_batch // 2,
            max_in_flight=max_in_flight,
            name="decrypt",
            linger=linger,
        )
        # A lookup's card and PIN inputs travel as one group, like decrypts. Only calls at
        # the latest key version coalesce: key_version is per call, not per item.
        self._hmacs: Coalescer[tuple[bytes, ...], list[str]] = Coalescer(
            self._send_hmacs,
            max_batch=max_batch // 2,
            max_in_flight=max_in_flight,
            name="hmac",
            linger=linger,
        )

    # -- public API ---------------------------------------------------------------------

    async def encrypt(self, plaintext: bytes, context: bytes) -> Encrypted:
        return await self._encrypts.submit((plaintext, context))

    async def decrypt(self, items: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """Decrypt several (ciphertext, context) pairs in one Transit call. Any failure
        is one opaque :class:`DecryptionError`; Vault being unreachable stays a
        :class:`VaultError` so callers can tell "try later" from "tampered"."""
        group = tuple(_DecryptItem(ct, ctx) for ct, ctx in items)
        if any(ciphertext_version(item.ciphertext) is None for item in group):
            raise DecryptionError()
        return await self._decrypts.submit(group)

    async def hmac(
        self,
        inputs: Sequence[bytes],
        *,
        key_version: int | None = None,
    ) -> list[str]:
        """HMAC several inputs with the lookup key. At the latest version (the common
        case) concurrent calls share one Transit call; an explicit older ``key_version``
        (verifier migration, rare) goes on its own."""
        if not inputs:
            return []
        if key_version is None:
            return await self._hmacs.submit(tuple(inputs))
        payload: dict[str, Any] = {
            "batch_input": [{"input": b64(i)} for i in inputs],
            "key_version": key_version,
        }
        results = await self._call("hmac", f"hmac/{self._lookup_key}", payload, len(inputs))
        return [_hmac_value(result) for result in results]

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._executor

    async def aclose(self) -> None:
        await self._encrypts.aclose()
        await self._decrypts.aclose()
        await self._hmacs.aclose()
        await self._http.aclose()

    # -- batch senders ------------------------------------------------------------------

    async def _send_encrypts(
        self,
        items: Sequence[tuple[bytes, bytes]],
    ) -> list[Encrypted | BaseException]:
        payload = {"batch_input": [{"plaintext": b64(p), "context": b64(c)} for p, c in items]}
        results = await self._call(
            "encrypt", f"encrypt/{self._dtmf_key}", payload, len(items), per_item_errors=True
        )
        out: list[Encrypted | BaseException] = []
        for result in results:
            version = ciphertext_version(str(result.get("ciphertext", "")))
            if "error" in result or version is None:
                out.append(ItemFailed("encrypt: Transit refused the item"))
            else:
                out.append(Encrypted(result["ciphertext"], version))
        return out

    async def _send_decrypts(
        self,
        groups: Sequence[tuple[_DecryptItem, ...]],
    ) -> list[list[bytes] | BaseException]:
        flat = [item for group in groups for item in group]
        payload = {
            "batch_input": [{"ciphertext": i.ciphertext, "context": b64(i.context)} for i in flat]
        }
        results = await self._call(
            "decrypt", f"decrypt/{self._dtmf_key}", payload, len(flat), per_item_errors=True
        )
        out: list[list[bytes] | BaseException] = []
        for chunk in _per_group(groups, results):
            try:
                # A refused item still carries "plaintext": "" next to its "error": an empty
                # plaintext is never a result.
                if any("error" in r for r in chunk):
                    raise ValueError("item refused")
                out.append([base64.b64decode(r["plaintext"], validate=True) for r in chunk])
            except (KeyError, ValueError, TypeError):
                out.append(DecryptionError())
        return out

    async def _send_hmacs(
        self,
        groups: Sequence[tuple[bytes, ...]],
    ) -> list[list[str] | BaseException]:
        flat = [data for group in groups for data in group]
        payload = {"batch_input": [{"input": b64(data)} for data in flat]}
        results = await self._call(
            "hmac", f"hmac/{self._lookup_key}", payload, len(flat), per_item_errors=True
        )
        out: list[list[str] | BaseException] = []
        for chunk in _per_group(groups, results):
            try:
                out.append([_hmac_value(result) for result in chunk])
            except VaultRequestError as exc:
                out.append(exc)
        return out

    # -- plumbing -----------------------------------------------------------------------

    async def _call(
        self,
        operation: str,
        path: str,
        payload: dict[str, Any],
        size: int,
        *,
        per_item_errors: bool = False,
    ) -> list[dict[str, Any]]:
        """One Transit batch call, with metrics. With
        ``per_item_errors``, a 400 that carries per-item results is not an error of the
        whole batch: Vault fails the call if any item fails, the others still succeeded."""
        self._metrics.transit_calls.labels(operation).inc()
        self._metrics.transit_items.labels(operation).inc(size)
        self._metrics.transit_batch_size.labels(operation).observe(size)
        started = time.perf_counter()
        try:
            try:
                answer: BatchAnswer = await self._http.write(
                    f"{self._mount}/{path}", f"transit {operation}", payload
                )
            except VaultRequestError as exc:
                if not per_item_errors:
                    raise
                answer = exc
            return batch_results(answer, size, f"transit {operation}")
        except VaultError as exc:
            self._metrics.vault_errors.labels(exc.kind).inc()
            raise
        finally:
            self._metrics.transit_latency.labels(operation).observe(time.perf_counter() - started)

    async def _run(self, func: Any, *args: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        result: dict[str, Any] = await loop.run_in_executor(self._executor, func, *args)
        return result
