"""Backups: Vault's Raft snapshot and the account store, together in one sealed file.

The two belong together: the store's verifiers can only be reproduced by the
``ivr-lookup`` key in that Vault (service/backend/keycheck.py), so a store restored
without its Vault, or the other way round, serves nobody. The file is a gzipped tar
stream, encrypted with age to the operators' public keys (service/backup/sealed.py), whose
members come in this order:

- ``manifest.json``: what, when, from which cluster, each data member's SHA-256;
- ``manifest.sig``: the manifest's ed25519 signature by Transit's ``ivr-backup-sign``,
  which only the backup identity may use (service/backup/signing.py);
- ``vault.snap`` (``GET sys/storage/raft/snapshot``) and ``accounts.sqlite3``: the store as
  one SQLite file whatever its engine (service/backup/transfer.py), so it restores into
  either engine.

Both ways are streamed: the store's copy goes from a temporary file through tar, gzip and
age into the output, and back through age, gzip and tar into private temporary files,
hashed on the way; the signature is checked as soon as the manifest and its signature
have been read, before the data members, and nothing is restored until every member
matches its digest. Only the snapshot is held in memory: it holds Vault's keys and
policies, not the accounts (tens of KB, 17 KB measured for a fresh Vault). A backup never
holds an unseal key or a token: the snapshot is sealed by Vault's barrier and opens only
with the unseal keys of the Vault it came from, which are kept elsewhere (docs/backup.md).

A backup written before this (format 1: the same members but no signature, gzip and no
age) restores only with ``--allow-unsealed``, with a warning.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pyrage import x25519

from service.backup import signing
from service.backup.sealed import AGE_MAGIC, DecryptFailed, decrypting, encrypting
from service.backup.transfer import export_to_sqlite, import_from_sqlite
from service.errors import BadInput
from service.files import private_writer
from service.settings import StoreUrl
from service.vault.client import VaultClient
from service.vault.operator_init import VaultServer

log = structlog.get_logger("ivr.backup")

FORMAT = 2  # sealed and signed
PLAIN_FORMAT = 1  # gzip only, before #20 item 7
SNAPSHOT, STORE = "vault.snap", "accounts.sqlite3"
MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"
DATA = (SNAPSHOT, STORE)
SNAPSHOT_PATH = "sys/storage/raft/snapshot"
RESTORE_PATH = "sys/storage/raft/snapshot-force"  # also into a new cluster (disaster)
CHUNK = 1 << 20
SMALL = 1 << 16  # the manifest and its signature are a few hundred bytes
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Manifest:
    created: float
    cluster_id: str
    vault_version: str
    sha256: dict[str, str]
    format: int = FORMAT

    def as_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "created": self.created,
            "cluster_id": self.cluster_id,
            "vault_version": self.vault_version,
            "sha256": self.sha256,
        }

    def encode(self) -> bytes:
        return json.dumps(self.as_json(), indent=2).encode()


def _file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _add(tar: tarfile.TarFile, name: str, data: IO[bytes], size: int, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(mtime)
    tar.addfile(info, data)  # copied in chunks, never read whole


def write_backup(
    vault: VaultClient,
    store_url: StoreUrl,
    out: Path,
    to: Sequence[x25519.Recipient],
    mount: str,
) -> Manifest:
    """Snapshot (needs ``read`` on sys/storage/raft/snapshot) and store copy, the manifest
    signed with ``ivr-backup-sign`` (needs ``update`` on its sign path: the ivr-backup
    identity), encrypted to ``to``: one file at ``out``, mode 0600, whole or not at all."""
    status = vault.read("sys/seal-status", "seal status")
    snapshot = vault.download(SNAPSHOT_PATH, "raft snapshot")
    with tempfile.TemporaryDirectory(prefix="ivr-backup-") as tmp:
        copy = Path(tmp) / STORE
        export_to_sqlite(store_url, copy)
        manifest = Manifest(
            time.time(),
            str(status.get("cluster_id", "")),
            str(status.get("version", "")),
            {SNAPSHOT: hashlib.sha256(snapshot).hexdigest(), STORE: _file_digest(copy)},
        )
        text = manifest.encode()
        signature = signing.sign(vault, mount, text).encode()
        with (
            private_writer(out) as raw,
            encrypting(raw, to) as plain,
            tarfile.open(fileobj=plain, mode="w|gz") as tar,
            copy.open("rb") as store,
        ):
            _add(tar, MANIFEST, io.BytesIO(text), len(text), manifest.created)
            _add(tar, SIGNATURE, io.BytesIO(signature), len(signature), manifest.created)
            _add(tar, SNAPSHOT, io.BytesIO(snapshot), len(snapshot), manifest.created)
            _add(tar, STORE, store, copy.stat().st_size, manifest.created)
        store_bytes = copy.stat().st_size
    log.info("backup written", snapshot_bytes=len(snapshot), store_bytes=store_bytes)
    return manifest


@dataclass(frozen=True)
class Backup:
    """A backup read and checked whole; its members are private temporary files, valid
    inside :func:`open_backup`'s block."""

    manifest: Manifest
    snapshot: Path
    store: Path
    sealed: bool


@dataclass(frozen=True)
class Unlock:
    """What opens and proves a sealed backup: the operator's age identities and the
    signing key's public halves. None: not given (a plain backup needs neither)."""

    identities: Sequence[x25519.Identity] | None
    verify_keys: Sequence[Ed25519PublicKey] | None
    identity_file: Path | None = None
    verify_file: Path | None = None


def sealed_file(path: Path) -> bool:
    """Whether ``path`` is a sealed backup (age) rather than a plain one (gzip)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(AGE_MAGIC))
    except FileNotFoundError:
        raise BadInput(f"--from: no such file: {path}") from None
    except OSError as exc:
        raise BadInput(f"--from: {path}: not a readable backup ({type(exc).__name__})") from None
    if head == AGE_MAGIC:
        return True
    if head[:2] == GZIP_MAGIC:
        return False
    if not head:
        raise BadInput(f"--from: {path}: the backup is damaged (empty)")
    raise BadInput(f"--from: {path}: not a backup (neither age-encrypted nor gzip)")


@contextlib.contextmanager
def open_backup(path: Path, unlock: Unlock, *, allow_unsealed: bool) -> Iterator[Backup]:
    """Read and check the backup at ``path`` before anything is touched: decrypted with
    the identities, its manifest's signature verified, every data member against its
    digest. A plain (format 1) backup only with ``allow_unsealed``. Every refusal is one
    :class:`BadInput` line."""
    sealed = sealed_file(path)
    if not sealed and not allow_unsealed:
        raise BadInput(
            f"--from: {path} is a plain backup (from before backups were sealed): neither "
            "encrypted nor signed, nothing proves who made it; restore it only if you know "
            "where it came from, with --allow-unsealed"
        )
    if sealed and (unlock.identities is None or unlock.verify_keys is None):
        raise BadInput(
            f"--identity: {path} is encrypted: name the age identity it was encrypted to"
        )
    with tempfile.TemporaryDirectory(prefix="ivr-restore-") as tmp, path.open("rb") as source:
        if not sealed:
            yield _unpack(source, Path(tmp), path, None)
            return
        assert unlock.identities is not None
        try:
            with decrypting(source, unlock.identities) as plain:
                backup = _unpack(plain, Path(tmp), path, unlock)
        except DecryptFailed as exc:
            raise BadInput(
                f"--from: {path}: cannot be decrypted with --identity {unlock.identity_file} "
                f"(not encrypted to it, or altered since: {exc}); nothing restored"
            ) from None
        yield backup


def _unpack(stream: IO[bytes], tmp: Path, path: Path, unlock: Unlock | None) -> Backup:
    """The tar stream's members into ``tmp``, checked as they come (see the module's
    docstring); ``unlock`` None: a plain backup, no signature expected."""
    small: dict[str, bytes] = {}
    digests: dict[str, str] = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|gz") as tar:
            manifest = _members(tar, tmp, path, unlock, small=small, digests=digests)
    except (
        EOFError,
        zlib.error,
        gzip.BadGzipFile,
        tarfile.ReadError,
        tarfile.CompressionError,
    ) as exc:
        # A copy cut short, or bytes changed in transit: gzip's stream is damaged.
        raise BadInput(
            f"--from: {path}: the backup is damaged (truncated or corrupted: {type(exc).__name__})"
        ) from None
    except (OSError, tarfile.TarError) as exc:
        raise BadInput(f"--from: {path}: not a readable backup ({type(exc).__name__})") from None
    if manifest is None:
        manifest = (
            _verified(small, unlock, path) if unlock else _manifest(small, path, PLAIN_FORMAT)
        )
    if set(digests) != set(DATA):
        raise BadInput(f"--from: {path}: the backup is incomplete (damaged)")
    for name in DATA:
        if digests[name] != manifest.sha256.get(name):
            raise BadInput(
                f"--from: {path}: {name} does not match its digest; the backup is damaged"
            )
    return Backup(manifest, tmp / SNAPSHOT, tmp / STORE, sealed=unlock is not None)


def _members(
    tar: tarfile.TarFile,
    tmp: Path,
    path: Path,
    unlock: Unlock | None,
    *,
    small: dict[str, bytes],
    digests: dict[str, str],
) -> Manifest | None:
    """Each member as it comes: the manifest and its signature into ``small``, the data
    members into ``tmp`` with their digests; a sealed backup's signature is checked before
    the first data member (then its manifest is returned)."""
    manifest = None
    known = (MANIFEST, *DATA) + ((SIGNATURE,) if unlock else ())
    for info in tar:
        handle = tar.extractfile(info) if info.isfile() else None
        if info.name not in known or handle is None:
            raise BadInput(f"--from: {path}: unexpected member in the backup: {info.name}")
        if info.name in small or info.name in digests:
            raise BadInput(f"--from: {path}: {info.name} twice; the backup is damaged")
        if info.name in (MANIFEST, SIGNATURE):
            if info.size > SMALL:
                raise BadInput(f"--from: {path}: {info.name} is too large to be one")
            small[info.name] = handle.read()
            continue
        if unlock is not None and manifest is None:
            manifest = _verified(small, unlock, path)
        digests[info.name] = _extract(handle, tmp / info.name)
    return manifest


def _verified(small: dict[str, bytes], unlock: Unlock, path: Path) -> Manifest:
    if MANIFEST not in small:
        raise BadInput(f"--from: {path}: no {MANIFEST} before the data; the backup is damaged")
    if SIGNATURE not in small:
        raise BadInput(
            f"--from: {path}: not signed (no {SIGNATURE}): nothing proves the backup "
            "identity made it; nothing restored"
        )
    assert unlock.verify_keys is not None
    if not signing.verifies(unlock.verify_keys, small[MANIFEST], small[SIGNATURE]):
        raise BadInput(
            f"--from: {path}: its signature does not verify against --verify-key "
            f"{unlock.verify_file}: not made by this deployment's backup identity, or "
            "altered; nothing restored"
        )
    return _manifest(small, path, FORMAT)


def _manifest(small: dict[str, bytes], path: Path, expected: int) -> Manifest:
    try:
        raw = json.loads(small[MANIFEST])
        if raw.get("format") != expected:
            raise BadInput(f"--from: {path}: unknown backup format")
        return Manifest(
            float(raw["created"]),
            str(raw["cluster_id"]),
            str(raw["vault_version"]),
            dict(raw["sha256"]),
            expected,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BadInput(
            f"--from: {path}: {MANIFEST} is not readable; the backup is damaged"
        ) from None


def _extract(handle: IO[bytes], target: Path) -> str:
    """Copy ``handle`` into ``target`` (in the private temporary directory) a chunk at a
    time; its SHA-256."""
    digest = hashlib.sha256()
    with target.open("xb") as out:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


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
    import_from_sqlite(backup.store, store_url)
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
    admin.upload(RESTORE_PATH, "raft snapshot restore", backup.snapshot.read_bytes())
    log.info("raft snapshot restored", same_cluster=own)
    if own:
        server.wait_active()
        return False
    server.wait_sealed()
    return True
