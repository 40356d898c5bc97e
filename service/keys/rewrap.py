"""``keys rewrap``: move every stored ciphertext to its key's latest version.

Transit ``rewrap`` decrypts and re-encrypts inside Vault; the key-admin identity that runs it
never sees a plaintext and needs no decrypt permission. Work goes in batches below the
listener's per-call limit, and each batch is committed on its own, so an interrupted run
loses at most one batch of work and a rerun selects only the rows still behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.errors import VaultRequestError
from service.formats import ciphertext_version
from service.keys.lifecycle import read_key
from service.settings import Settings
from service.store.sealed import SealedRecord, SealedStore
from service.vault.batch import BatchAnswer, batch_results
from service.vault.client import VaultClient
from service.vault.transit import MAX_BATCH

DEFAULT_BATCH = 100

Progress = Callable[[int, int], None]  # (rows done, rows to do)


@dataclass
class RewrapResult:
    key: str
    latest: int
    rewrapped: int = 0
    batches: int = 0
    failed: list[int] = field(default_factory=list)  # record ids Transit refused

    @property
    def ok(self) -> bool:
        return not self.failed


def _rewrap(
    vault: VaultClient, path: str, payload: dict[str, Any], size: int
) -> list[dict[str, Any]]:
    try:
        answer: BatchAnswer = vault.write(path, "transit rewrap", payload)
    except VaultRequestError as exc:
        answer = exc
    return batch_results(answer, size, "transit rewrap")


def _item(record: SealedRecord) -> dict[str, str]:
    item = {"ciphertext": record.ciphertext}
    if record.context:
        item["context"] = record.context
    return item


def rewrap_key(
    vault: VaultClient,
    settings: Settings,
    store: SealedStore,
    key: str,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
) -> RewrapResult:
    """Rewrap every row of ``key`` whose version is below the key's latest (read once at
    the start and pinned, so a rotation during the run does not move the goal)."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch size must be between 1 and {MAX_BATCH}")
    latest = int(read_key(vault, settings, key)["latest_version"])
    result = RewrapResult(key, latest)
    total = store.count_below(key, latest)
    if progress:
        progress(0, total)
    after_id = 0
    done = 0
    while rows := store.behind(key, latest, after_id=after_id, limit=batch_size):
        after_id = rows[-1].id
        payload = {"batch_input": [_item(r) for r in rows], "key_version": latest}
        results = _rewrap(vault, f"{settings.transit_mount}/rewrap/{key}", payload, len(rows))
        updates = []
        for record, item in zip(rows, results, strict=True):
            new = str(item.get("ciphertext", ""))
            if item.get("error") or ciphertext_version(new) != latest:
                # A retired or damaged ciphertext: leave the row, report its id.
                result.failed.append(record.id)
            else:
                updates.append((record.id, record.ciphertext, new))
        result.rewrapped += store.replace(updates)
        result.batches += 1
        done += len(rows)
        if progress:
            progress(done, total)
    return result
