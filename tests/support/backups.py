"""Backup files made by hand, as an attacker (or an older release) would make them: the
members a backup holds, in a plain gzip tarball (format 1, before backups were sealed) or
sealed (age-encrypted, format 2) with a signature of the test's choosing."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyrage
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pyrage import x25519

from service.backup import signing
from service.backup.archive import (
    FORMAT,
    MANIFEST,
    PLAIN_FORMAT,
    SIGNATURE,
    SNAPSHOT,
    STORE,
    Backup,
    Manifest,
    Unlock,
    open_backup,
)
from service.backup.sealed import read_identities
from service.backup.signing import VERIFY_KEY_NAME, read_verify_keys
from service.vault.client import VaultClient


def manifest_for(members: dict[str, bytes], fmt: int, cluster_id: str = "c") -> bytes:
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in members.items()}
    return Manifest(1.0, cluster_id, "v", digests, fmt).encode()


def tarball(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def plain_backup(path: Path, snapshot: bytes, store: bytes, cluster_id: str = "c") -> Path:
    """A backup as releases before the sealing wrote it: gzip, no signature, no age."""
    data = {SNAPSHOT: snapshot, STORE: store}
    path.write_bytes(tarball({MANIFEST: manifest_for(data, PLAIN_FORMAT, cluster_id), **data}))
    return path


def transit_signature(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """A signature spelled as Transit spells one (``vault:v1:base64``)."""
    return b"vault:v1:" + base64.b64encode(key.sign(data))


def sealed_backup(
    path: Path,
    to: x25519.Recipient,
    snapshot: bytes,
    store: bytes,
    *,
    signer: Ed25519PrivateKey | None,
    cluster_id: str = "c",
) -> Path:
    """A sealed backup encrypted to ``to``, its manifest signed by ``signer`` (None: no
    signature member at all)."""
    data = {SNAPSHOT: snapshot, STORE: store}
    manifest = manifest_for(data, FORMAT, cluster_id)
    members = {MANIFEST: manifest}
    if signer is not None:
        members[SIGNATURE] = transit_signature(signer, manifest)
    path.write_bytes(pyrage.encrypt(tarball({**members, **data}), [to]))
    return path


def public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def flip_a_payload_byte(path: Path) -> None:
    """One byte changed in the middle of an age file's payload (past its header)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2 + 64
    data[middle] ^= 0x01
    path.write_bytes(bytes(data))


@contextmanager
def opened(path: Path, identity: Path, verify_key: Path | None = None) -> Iterator[Backup]:
    """A sealed backup opened as ``restore --identity`` opens it (the verify key beside
    the identity unless named)."""
    verify = verify_key or identity.parent / VERIFY_KEY_NAME
    unlock = Unlock(read_identities(identity), read_verify_keys(verify), identity, verify)
    with open_backup(path, unlock, allow_unsealed=False) as backup:
        yield backup


@dataclass(frozen=True)
class OperatorKeys:
    """An operator's age identity file and, beside it, the backup signing key's public
    half as Vault holds it."""

    identity: Path
    recipient: str

    @property
    def verify_key(self) -> Path:
        return self.identity.parent / VERIFY_KEY_NAME

    @classmethod
    def make(cls, directory: Path, admin: VaultClient) -> OperatorKeys:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        made = x25519.Identity.generate()
        (directory / "identity.txt").write_text(f"{made}\n")
        (directory / VERIFY_KEY_NAME).write_text(signing.public_pem(admin, "transit"))
        return cls(directory / "identity.txt", str(made.to_public()))
