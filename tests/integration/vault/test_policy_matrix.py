"""Least privilege as a matrix, on a real Vault (docs/security.md, "Least privilege").

Every identity (logged in with its own AppRole, exactly as the services do; and again with
its own Kubernetes service-account token, VAULT_AUTH=jwt) tries every operation; each cell
is either allowed (the call succeeds) or refused with 403. Nothing is inferred from the
policy text: the server decides. The Vault is private to this module (one per way of
logging in) because the allowed cells rotate and reconfigure keys.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.devtools.devstack import DevVault
from service.errors import VaultPermissionDenied
from service.settings import Secret
from service.vault.bootstrap import bootstrap
from service.vault.client import AppRoleCredentials, VaultClient
from service.vault.jwt_auth import JwtAuth, configure_jwt
from service.vault.jwt_login import JwtCredentials
from tests.support.keys import PrivateVault, private_vault
from tests.support.service_account import Issuer

CONTEXT = base64.b64encode(b"CA0123456789abcdef0123456789abcdef:card_last4").decode()
PLAINTEXT = base64.b64encode(b"1234").decode()


@dataclass
class Lab:
    vault: DevVault
    root: VaultClient
    clients: dict[str, VaultClient]
    ciphertext: str


IDENTITIES = ("ivr-webhook", "ivr-backend", "ivr-keyadmin", "ivr-backup")


def approle_clients(pv: PrivateVault, tmp: Path) -> dict[str, VaultClient]:
    return {
        role: VaultClient(
            pv.vault.addr, AppRoleCredentials(Secret(c.role_id), Secret(c.secret_id)), timeout=5
        )
        for role, c in pv.credentials.items()
    }


def jwt_clients(pv: PrivateVault, tmp: Path) -> dict[str, VaultClient]:
    """Each identity as a service account in namespace ``ivr``, its token in a file."""
    issuer = Issuer.make()
    accounts = {role: f"sa-{role}" for role in IDENTITIES}
    configure_jwt(
        pv.admin,
        bootstrap(pv.admin),
        JwtAuth("ivr-vault", "ivr", accounts, pubkeys=(issuer.public_pem,)),
    )
    return {
        role: VaultClient(
            pv.vault.addr,
            JwtCredentials(role, issuer.write(tmp / role, "ivr", account, audience="ivr-vault")),
            timeout=5,
        )
        for role, account in accounts.items()
    }


@pytest.fixture(scope="module", params=[approle_clients, jwt_clients], ids=["approle", "jwt"])
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    clients: dict[str, VaultClient] = {}
    with private_vault(tmp_path_factory.mktemp("matrix"), IDENTITIES) as pv:
        try:
            clients = request.param(pv, Path(tmp_path_factory.mktemp("identities")))
            made = pv.admin.write(
                "transit/encrypt/ivr-dtmf", "encrypt", {"plaintext": PLAINTEXT, "context": CONTEXT}
            )
            yield Lab(pv.vault, pv.admin, clients, made["data"]["ciphertext"])
        finally:
            for client in clients.values():
                client.close()
            pv.admin.close()


Operation = Callable[[VaultClient, Lab], object]

OPERATIONS: dict[str, Operation] = {
    "encrypt": lambda c, lab: c.write(
        "transit/encrypt/ivr-dtmf", "op", {"plaintext": PLAINTEXT, "context": CONTEXT}
    ),
    "decrypt": lambda c, lab: c.write(
        "transit/decrypt/ivr-dtmf", "op", {"ciphertext": lab.ciphertext, "context": CONTEXT}
    ),
    "hmac": lambda c, lab: c.write("transit/hmac/ivr-lookup", "op", {"input": PLAINTEXT}),
    "rewrap": lambda c, lab: c.write(
        "transit/rewrap/ivr-dtmf", "op", {"ciphertext": lab.ciphertext, "context": CONTEXT}
    ),
    "rotate": lambda c, lab: c.write("transit/keys/ivr-dtmf/rotate", "op"),
    "read key": lambda c, lab: c.read("transit/keys/ivr-dtmf", "op"),
    "config (allowed setting)": lambda c, lab: c.write(
        "transit/keys/ivr-dtmf/config", "op", {"auto_rotate_period": "720h"}
    ),
    "export": lambda c, lab: c.read("transit/export/encryption-key/ivr-dtmf", "op"),
    "export latest": lambda c, lab: c.read("transit/export/encryption-key/ivr-dtmf/latest", "op"),
    "export hmac key": lambda c, lab: c.read("transit/export/hmac-key/ivr-lookup", "op"),
    "backup": lambda c, lab: c.read("transit/backup/ivr-dtmf", "op"),
    "config exportable=true": lambda c, lab: c.write(
        "transit/keys/ivr-dtmf/config", "op", {"exportable": True}
    ),
    "config allow_plaintext_backup=true": lambda c, lab: c.write(
        "transit/keys/ivr-dtmf/config", "op", {"allow_plaintext_backup": True}
    ),
    "config deletion_allowed=true": lambda c, lab: c.write(
        "transit/keys/ivr-dtmf/config", "op", {"deletion_allowed": True}
    ),
    "delete": lambda c, lab: c.request("DELETE", "transit/keys/ivr-dtmf", "op"),
    "trim": lambda c, lab: c.write(
        "transit/keys/ivr-dtmf/trim", "op", {"min_available_version": 1}
    ),
    "sys/audit-hash": lambda c, lab: c.write("sys/audit-hash/file", "op", {"input": "1234"}),
    "tune transit mount": lambda c, lab: c.write(
        "sys/mounts/transit/tune", "op", {"default_lease_ttl": "1h"}
    ),
    "create exportable key": lambda c, lab: c.write(
        "transit/keys/ivr-stolen", "op", {"type": "aes256-gcm96", "exportable": True}
    ),
    "rewrite own policy": lambda c, lab: c.write(
        "sys/policies/acl/ivr-keyadmin", "op", {"policy": 'path "*" { capabilities = ["sudo"] }'}
    ),
    "raft snapshot": lambda c, lab: c.download("sys/storage/raft/snapshot", "op"),
    # The backup's manifest signature (docs/backup.md): only the backup identity signs,
    # only on the plain path (not the one naming a hash), and nobody else even verifies.
    "sign with the backup key": lambda c, lab: c.write(
        "transit/sign/ivr-backup-sign", "op", {"input": PLAINTEXT}
    ),
    "sign with the backup key, hash in the path": lambda c, lab: c.write(
        "transit/sign/ivr-backup-sign/sha2-512", "op", {"input": PLAINTEXT}
    ),
    "verify with the backup key": lambda c, lab: c.write(
        "transit/verify/ivr-backup-sign", "op", {"input": PLAINTEXT, "signature": "vault:v1:AA=="}
    ),
    "read the backup key": lambda c, lab: c.read("transit/keys/ivr-backup-sign", "op"),
    "rotate the backup key": lambda c, lab: c.write("transit/keys/ivr-backup-sign/rotate", "op"),
    "config the backup key (allowed setting)": lambda c, lab: c.write(
        "transit/keys/ivr-backup-sign/config", "op", {"auto_rotate_period": "720h"}
    ),
    "sign with ivr-dtmf": lambda c, lab: c.write(
        "transit/sign/ivr-dtmf", "op", {"input": PLAINTEXT}
    ),
    # Refused before the body is looked at: no identity may force data into Vault.
    "raft snapshot restore": lambda c, lab: c.upload(
        "sys/storage/raft/snapshot-force", "op", b"not a snapshot"
    ),
}

# Who may do what (docs/architecture.md, "What runs where"). Every other cell must be a 403.
ALLOWED: dict[str, set[str]] = {
    "ivr-webhook": {"encrypt"},
    "ivr-backend": {"decrypt", "hmac"},
    "ivr-keyadmin": {"rewrap", "rotate", "read key", "config (allowed setting)"},
    "ivr-backup": {"raft snapshot", "sign with the backup key"},
}

# The same table, as docs/security.md shows it: read it top to bottom to check it against
# the one above.
CELLS = [(role, op) for role in ALLOWED for op in OPERATIONS]


@pytest.mark.parametrize(("role", "operation"), CELLS, ids=[f"{r}:{o}" for r, o in CELLS])
def test_policy_matrix(lab: Lab, role: str, operation: str) -> None:
    client = lab.clients[role]
    run = OPERATIONS[operation]
    if operation in ALLOWED[role]:
        answer = run(client, lab)
        assert isinstance(answer, dict | bytes) and answer
    else:
        with pytest.raises(VaultPermissionDenied):
            run(client, lab)


def test_the_allowed_cells_really_did_something(lab: Lab) -> None:
    """Guard against a matrix that passes because nothing works: the key-admin's rotate
    moved the key on, and its rewrap produced a ciphertext at the newest version."""
    admin = lab.clients["ivr-keyadmin"]
    admin.write("transit/keys/ivr-dtmf/rotate", "rotate")
    key = admin.read("transit/keys/ivr-dtmf", "read key")["data"]
    assert key["latest_version"] >= 2
    assert key["exportable"] is False and key["deletion_allowed"] is False
    assert key["allow_plaintext_backup"] is False
    rewrapped = admin.write(
        "transit/rewrap/ivr-dtmf", "rewrap", {"ciphertext": lab.ciphertext, "context": CONTEXT}
    )
    assert rewrapped["data"]["ciphertext"].startswith(f"vault:v{key['latest_version']}:")
    # Key-admin never sees plaintext: the rewrap answer carries none, and the backend can
    # still decrypt the rewrapped value.
    assert "plaintext" not in rewrapped["data"]
    plain = lab.clients["ivr-backend"].write(
        "transit/decrypt/ivr-dtmf",
        "decrypt",
        {"ciphertext": rewrapped["data"]["ciphertext"], "context": CONTEXT},
    )
    assert base64.b64decode(plain["data"]["plaintext"]) == b"1234"


@pytest.mark.parametrize("key", ["ivr-dtmf", "ivr-lookup", "ivr-legacy", "anything"])
def test_key_admin_can_never_decrypt_or_export(lab: Lab, key: str) -> None:
    admin = lab.clients["ivr-keyadmin"]
    attempts: list[Callable[[], object]] = [
        lambda: admin.write(
            f"transit/decrypt/{key}", "decrypt", {"ciphertext": lab.ciphertext, "context": CONTEXT}
        ),
        lambda: admin.write(f"transit/datakey/plaintext/{key}", "datakey", {"context": CONTEXT}),
        lambda: admin.write(f"transit/keys/{key}/config", "config", {"exportable": True}),
        lambda: admin.write(
            f"transit/keys/{key}/config", "config", {"allow_plaintext_backup": True}
        ),
        *[
            (lambda kind=kind: admin.read(f"transit/export/{kind}/{key}", "export"))
            for kind in ("encryption-key", "signing-key", "hmac-key", "public-key")
        ],
        lambda: admin.read(f"transit/backup/{key}", "backup"),
    ]
    for attempt in attempts:
        with pytest.raises(VaultPermissionDenied):
            attempt()
