"""The policies' first clauses, on the real Vault with each service's own AppRole: the
webhook may encrypt but never decrypt or read the key; the backend may decrypt but never
encrypt. (The full identity-by-operation matrix is
tests/integration/vault/test_policy_matrix.py.)"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from service.devtools.devstack import DevVault
from service.errors import VaultPermissionDenied
from service.vault.bootstrap import RoleCredentials
from service.vault.client import VaultClient
from tests.support.stack import role_client

CONTEXT = base64.b64encode(b"CA00000000000000000000000000000000:card_last4").decode()
PLAINTEXT = base64.b64encode(b"1234").decode()


@pytest.fixture
def webhook(
    dev_vault: DevVault,
    credentials: dict[str, RoleCredentials],
) -> Iterator[VaultClient]:
    client = role_client(dev_vault, credentials["ivr-webhook"])
    yield client
    client.close()


@pytest.fixture
def backend(
    dev_vault: DevVault,
    credentials: dict[str, RoleCredentials],
) -> Iterator[VaultClient]:
    client = role_client(dev_vault, credentials["ivr-backend"])
    yield client
    client.close()


def encrypt(client: VaultClient) -> str:
    answer = client.write(
        "transit/encrypt/ivr-dtmf", "encrypt", {"plaintext": PLAINTEXT, "context": CONTEXT}
    )
    ciphertext: str = answer["data"]["ciphertext"]
    return ciphertext


def test_webhook_encrypts_but_cannot_decrypt(webhook: VaultClient) -> None:
    ciphertext = encrypt(webhook)
    assert ciphertext.startswith("vault:v")
    with pytest.raises(VaultPermissionDenied):
        webhook.write(
            "transit/decrypt/ivr-dtmf", "decrypt", {"ciphertext": ciphertext, "context": CONTEXT}
        )


def test_webhook_cannot_read_the_key(webhook: VaultClient) -> None:
    for path in ("transit/keys/ivr-dtmf", "transit/export/encryption-key/ivr-dtmf"):
        with pytest.raises(VaultPermissionDenied):
            webhook.read(path, "read key")


def test_backend_decrypts_but_cannot_encrypt(
    webhook: VaultClient,
    backend: VaultClient,
) -> None:
    ciphertext = encrypt(webhook)
    answer = backend.write(
        "transit/decrypt/ivr-dtmf", "decrypt", {"ciphertext": ciphertext, "context": CONTEXT}
    )
    assert base64.b64decode(answer["data"]["plaintext"]) == b"1234"
    with pytest.raises(VaultPermissionDenied):
        encrypt(backend)
