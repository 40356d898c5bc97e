"""Backups: Vault's Raft snapshot and the account store, together in one tarball.

The two belong together: the store's verifiers can only be reproduced by the
``ivr-lookup`` key in that Vault (service/backend/keycheck.py), so a store restored
without its Vault, or the other way round, serves nobody. The tarball holds
``manifest.json`` (what, when, from which cluster, each member's SHA-256),
``vault.snap`` (``GET sys/storage/raft/snapshot``) and ``accounts.sqlite3``: the store as
one SQLite file whatever its engine (a copy by SQLite's backup API, or a PostgreSQL store's
tables read in one snapshot: ``service/backup/transfer.py``), so it restores into either
engine. It never holds an unseal key or a token: the snapshot is sealed by
Vault's barrier and opens only with the unseal keys of the Vault it came from, which
are kept elsewhere (docs/backup.md). Written with mode 0600 all the same: the store
names accounts and balances.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from service.backup.transfer import export_to_sqlite, import_from_sqlite
from service.errors import BadInput
from service.files import private_writer
from service.settings import StoreUrl
from service.vault.client import VaultClient
from service.vault.operator_init import VaultServer

log = structlog.get_logger("ivr.backup")

FORMAT = 1
SNAPSHOT, STORE, MANIFEST = "vault.snap", "accounts.sqlite3", "manifest.json"
SNAPSHOT_PATH = "sys/storage/raft/snapshot"
RESTORE_PATH = "sys/storage/raft/snapshot-force"  # also into a new cluster (disaster)


@dataclass(frozen=True)
class Manifest:
    created: float
    cluster_id: str
    vault_version: str
    sha256: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "created": self.created,
            "cluster_id": self.cluster_id,
            "vault_version": self.vault_version,
            "sha256": self.sha256,
        }


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_backup(vault: VaultClient, store_url: StoreUrl, out: Path) -> Manifest:
    """Snapshot (needs ``read`` on sys/storage/raft/snapshot: the ivr-backup identity),
    store copy, one tarball at ``out``, mode 0600, written whole or not at all."""
    status = vault.read("sys/seal-status", "seal status")
    snapshot = vault.download(SNAPSHOT_PATH, "raft snapshot")
    with tempfile.TemporaryDirectory(prefix="ivr-backup-") as tmp:
        copy = Path(tmp) / STORE
        export_to_sqlite(store_url, copy)
        store = copy.read_bytes()
    manifest = Manifest(
        time.time(),
        str(status.get("cluster_id", "")),
        str(status.get("version", "")),
        {SNAPSHOT: _digest(snapshot), STORE: _digest(store)},
    )
    members = {
        MANIFEST: json.dumps(manifest.as_json(), indent=2).encode(),
        SNAPSHOT: snapshot,
        STORE: store,
    }
    with private_writer(out) as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(manifest.created)
            tar.addfile(info, io.BytesIO(data))
    log.info("backup written", snapshot_bytes=len(snapshot), store_bytes=len(store))
    return manifest


@dataclass(frozen=True)
class Backup:
    manifest: Manifest
    snapshot: bytes
    store: bytes


def read_backup(path: Path) -> Backup:
    """Read and check a backup: exactly the three members, each matching its digest."""
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            members = {}
            for info in tar.getmembers():
                handle = tar.extractfile(info) if info.isfile() else None
                if info.name not in (MANIFEST, SNAPSHOT, STORE) or handle is None:
                    raise BadInput(f"--from: {path}: unexpected member in the backup: {info.name}")
                members[info.name] = handle.read()
    except FileNotFoundError:
        raise BadInput(f"--from: no such file: {path}") from None
    except (EOFError, zlib.error, gzip.BadGzipFile, tarfile.ReadError) as exc:
        # A copy cut short, or bytes changed in transit: gzip's stream is damaged.
        raise BadInput(
            f"--from: {path}: the backup is damaged (truncated or corrupted: {type(exc).__name__})"
        ) from None
    except (OSError, tarfile.TarError) as exc:
        raise BadInput(f"--from: {path}: not a readable backup ({type(exc).__name__})") from None
    if set(members) != {MANIFEST, SNAPSHOT, STORE}:
        raise BadInput(f"--from: {path}: the backup is incomplete (damaged)")
    try:
        raw = json.loads(members[MANIFEST])
        if raw.get("format") != FORMAT:
            raise BadInput(f"--from: {path}: unknown backup format")
        manifest = Manifest(
            float(raw["created"]),
            str(raw["cluster_id"]),
            str(raw["vault_version"]),
            dict(raw["sha256"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BadInput(
            f"--from: {path}: {MANIFEST} is not readable; the backup is damaged"
        ) from None
    for name in (SNAPSHOT, STORE):
        if _digest(members[name]) != manifest.sha256.get(name):
            raise BadInput(
                f"--from: {path}: {name} does not match its digest; the backup is damaged"
            )
    return Backup(manifest, members[SNAPSHOT], members[STORE])


def restore_store(backup: Backup, store_url: StoreUrl) -> Path | None:
    """Put the backup's store in place of the one at ``store_url``, in one step (SQLite's
    backup API; one PostgreSQL transaction). The store there is first copied aside, as a
    SQLite file (beside a SQLite store; for PostgreSQL, in the working directory);
    returns where to."""
    aside: Path | None = None
    stamp = int(time.time())
    if store_url.engine == "postgresql":
        aside = Path(f"accounts.before-restore-{stamp}.sqlite3").resolve()
    elif Path(store_url.path).exists():
        where = Path(store_url.path)
        aside = where.with_name(f"{where.name}.before-restore-{stamp}")
    if aside is not None:
        os.close(os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # 0600 from
        export_to_sqlite(store_url, aside)  # the start; an existing file is never replaced
    with tempfile.TemporaryDirectory(prefix="ivr-restore-") as tmp:
        source = Path(tmp) / STORE
        source.write_bytes(backup.store)
        import_from_sqlite(source, store_url)
    return aside


def restore_snapshot(admin: VaultClient, server: VaultServer, backup: Backup) -> bool:
    """Force the snapshot into the Vault ``admin`` talks to (a token that may
    ``snapshot-force``: root, or sudo on that path). Returns True when the Vault sealed
    itself, as it does when the snapshot came from another cluster (a Vault rebuilt
    after its data was lost): its data now opens only with the unseal keys of the Vault
    the snapshot came from (measured: the new cluster's key is refused with "failed to
    decrypt keys from storage"), and its tokens are that Vault's. Restored into its own
    cluster, it stays unsealed."""
    own = server.seal_status().get("cluster_id") == backup.manifest.cluster_id
    admin.upload(RESTORE_PATH, "raft snapshot restore", backup.snapshot)
    log.info("raft snapshot restored", same_cluster=own)
    if own:
        server.wait_active()
        return False
    server.wait_sealed()
    return True
