"""A backup's signature: its manifest signed by an ed25519 key in Transit, checked offline.

Encryption to an operator's public key proves nothing about who made a file: anyone who
knows that public key can make one. So the manifest (the members' SHA-256 digests, the
cluster, the time) is signed with ``ivr-backup-sign``, an ed25519 Transit key that only the
``ivr-backup`` identity may use (policies/ivr-backup.hcl: ``sign``, nothing else), and
restore checks that signature with ``cryptography`` against the key's public half, which
the operator exported once (``ivr-vault bootstrap --backup-verify-key FILE``) and keeps
beside the age identity. The check needs no Vault: the Vault a backup restores is often
gone.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from service.errors import BadInput
from service.vault.client import VaultClient

SIGNING_KEY = "ivr-backup-sign"  # vault/layout.json; the policy names it too
# Beside the age identity (restore's default for --verify-key).
VERIFY_KEY_NAME = "ivr-backup-verify.pem"
PEM_BEGIN = "-----BEGIN PUBLIC KEY-----"


def sign(vault: VaultClient, mount: str, data: bytes) -> str:
    """Transit's signature of ``data`` (``vault:vN:…``): ed25519 signs the bytes themselves."""
    answer = vault.write(
        f"{mount}/sign/{SIGNING_KEY}",
        "sign the backup's manifest",
        {"input": base64.b64encode(data).decode()},
    )
    return str(answer["data"]["signature"])


def public_pem(admin: VaultClient, mount: str) -> str:
    """Every version's public key (a Transit key may be rotated: older backups keep their
    version's signature), as PEM blocks, oldest first."""
    keys = admin.read(f"{mount}/keys/{SIGNING_KEY}", "read the backup signing key")["data"]["keys"]
    blocks = []
    for version in sorted(keys, key=int):
        raw = base64.b64decode(keys[version]["public_key"])
        pem = Ed25519PublicKey.from_public_bytes(raw).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        blocks.append(f"# {SIGNING_KEY} v{version}\n{pem.decode()}")
    return "".join(blocks)


def read_verify_keys(path: Path) -> list[Ed25519PublicKey]:
    """The ed25519 public keys (PEM blocks) in ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(
            f"--verify-key: no such file: {path} (export it once with "
            "`ivr-vault bootstrap --backup-verify-key FILE`; docs/backup.md)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"--verify-key: cannot read {path} ({type(exc).__name__})") from None
    found = []
    for block in text.split(PEM_BEGIN)[1:]:
        try:
            key = serialization.load_pem_public_key((PEM_BEGIN + block).encode())
        except ValueError:
            key = None
        if not isinstance(key, Ed25519PublicKey):
            raise BadInput(f"--verify-key: {path} holds a block that is not an ed25519 public key")
        found.append(key)
    if not found:
        raise BadInput(f"--verify-key: {path} holds no public key (PEM)")
    return found


def verifies(keys: Sequence[Ed25519PublicKey], data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` (Transit's ``vault:vN:base64``) is one of ``keys``' over ``data``."""
    prefix, _, encoded = signature.decode("ascii", "replace").strip().rpartition(":")
    if not prefix.startswith("vault:v"):
        return False
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return False
    for key in keys:
        try:
            key.verify(raw, data)
        except InvalidSignature:
            continue
        return True
    return False
