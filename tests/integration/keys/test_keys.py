"""``ivr-vault keys status|rotate|retire`` as the key-admin identity, on a private real OpenBao."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.backend.enrolment import Enrolment, add_account
from service.errors import VaultPermissionDenied, VaultRequestError
from service.settings import Settings
from service.store.accounts import Store
from tests.support.keys import PrivateVault, private_vault
from tests.support.stack import role_client

CONTEXT = base64.b64encode(b"CA" + b"0" * 32 + b":card_last4").decode()


@pytest.fixture(scope="module")
def pv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateVault]:
    with private_vault(tmp_path_factory.mktemp("keys")) as vault:
        yield vault


def status_json(pv: PrivateVault, **env: str) -> dict[str, dict[str, object]]:
    result = pv.cli("keys", "status", "--json", env=pv.cli_env(**env))
    assert result.returncode == 0, result.stderr
    data: dict[str, dict[str, object]] = json.loads(result.stdout)
    return data


def encrypt_v(pv: PrivateVault, plaintext: bytes) -> str:
    data = pv.admin.write(
        "transit/encrypt/ivr-dtmf",
        "encrypt",
        {"plaintext": base64.b64encode(plaintext).decode(), "context": CONTEXT},
    )["data"]
    return str(data["ciphertext"])


def decrypts(pv: PrivateVault, ciphertext: str) -> bool:
    try:
        pv.admin.write(
            "transit/decrypt/ivr-dtmf", "decrypt", {"ciphertext": ciphertext, "context": CONTEXT}
        )
    except VaultRequestError:
        return False
    return True


def test_status_json_reports_versions_and_stored_verifiers(pv: PrivateVault) -> None:
    settings = Settings.from_environ(
        {
            "VAULT_ADDR": pv.vault.addr,
            "STORE_PATH": str(pv.store_path),
            "VAULT_ROLE_ID": pv.credentials["ivr-backend"].role_id,
            "VAULT_SECRET_ID": pv.credentials["ivr-backend"].secret_id,
        }
    )
    add_account(settings, Enrolment("AC00000001", "1.00", "51627384", "1111", "2719"))
    before = status_json(pv)["ivr-dtmf"]["latest_version"]
    rotated = pv.cli("keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert f"v{int(str(before)) + 1}" in rotated.stdout

    data = status_json(pv)
    assert set(data) == {"ivr-dtmf", "ivr-lookup"}  # no ivr-legacy imported here
    dtmf = data["ivr-dtmf"]
    assert dtmf["latest_version"] == int(str(before)) + 1
    assert dtmf["min_decryption_version"] == 1
    assert dtmf["min_encryption_version"] == 0
    assert dtmf["auto_rotate_period"] == 720 * 3600  # the layout's 720h
    versions = dtmf["versions"]
    assert isinstance(versions, dict)
    assert sorted(versions) == [str(v) for v in range(1, int(str(dtmf["latest_version"])) + 1)]
    for entry in versions.values():
        created = time.strptime(entry["created"], "%Y-%m-%dT%H:%M:%SZ")
        assert abs(time.mktime(created) - time.mktime(time.gmtime())) < 600
    assert dtmf["stored_records"] == {}  # the store keeps no ivr-dtmf ciphertexts
    assert data["ivr-lookup"]["stored_records"] == {"1": 2}  # card and PIN, account number
    assert data["ivr-lookup"]["stored_records"] == {
        str(v): n for v, n in Store(pv.store_path).version_counts().items()
    }

    table = pv.cli("keys", "status")
    assert table.returncode == 0, table.stderr
    assert "ivr-dtmf  latest v" in table.stdout
    assert "auto_rotate_period 30d" in table.stdout
    assert "ivr-lookup" in table.stdout


def test_retire_refuses_a_window_shorter_than_call_max_age(pv: PrivateVault) -> None:
    pv.cli("keys", "rotate")
    before = pv.key("ivr-dtmf")["min_decryption_version"]
    result = pv.cli("keys", "retire", "--older-than", "1h", env=pv.cli_env(CALL_MAX_AGE="4h"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CALL_MAX_AGE" in lines[0], result.stderr
    assert pv.key("ivr-dtmf")["min_decryption_version"] == before


def test_retire_waits_for_the_newer_version_to_age_then_recovers(pv: PrivateVault) -> None:
    old = encrypt_v(pv, b"5678")
    assert pv.cli("keys", "rotate").returncode == 0
    latest = int(str(pv.key("ivr-dtmf")["latest_version"]))
    env = pv.cli_env(CALL_MAX_AGE="2s")

    young = pv.cli("keys", "retire", "--older-than", "30s", env=env)
    assert young.returncode == 0, young.stderr
    assert "nothing to retire" in young.stdout
    assert decrypts(pv, old)

    time.sleep(3.2)  # the newest version is now older than the 2 s window (+1 s resolution)
    dry = pv.cli("keys", "retire", "--older-than", "2s", "--dry-run", env=env)
    assert "would retire" in dry.stdout and pv.key("ivr-dtmf")["min_decryption_version"] == 1
    done = pv.cli("keys", "retire", "--older-than", "2s", env=env)
    assert done.returncode == 0, done.stderr
    assert f"-> {latest}" in done.stdout
    assert pv.key("ivr-dtmf")["min_decryption_version"] == latest
    assert not decrypts(pv, old)
    assert decrypts(pv, encrypt_v(pv, b"5678"))  # new calls are untouched

    # Recovery from a mistaken retirement, with the vault CLI and the key-admin token: the
    # key material was never deleted (key-admin cannot trim), so lowering the floor is enough.
    recovered = pv.bao(
        "write",
        "transit/keys/ivr-dtmf/config",
        "min_decryption_version=1",
        token=pv.keyadmin_token(),
    )
    assert recovered.returncode == 0, recovered.stderr
    assert decrypts(pv, old)
    status = status_json(pv)["ivr-dtmf"]
    assert status["min_decryption_version"] == 1


def test_retire_refuses_a_version_stored_verifiers_still_use(pv: PrivateVault) -> None:
    assert Store(pv.store_path).version_counts() == {1: 2}
    assert pv.cli("keys", "rotate", "--key", "ivr-lookup").returncode == 0
    time.sleep(1.1)
    result = pv.cli(
        "keys",
        "retire",
        "--key",
        "ivr-lookup",
        "--older-than",
        "1s",
        env=pv.cli_env(CALL_MAX_AGE="1s"),
    )
    assert result.returncode == 1
    assert "v1 (2 records)" in result.stderr and "next successful lookup" in result.stderr
    assert pv.key("ivr-lookup")["min_decryption_version"] == 1


def test_keyadmin_identity_never_decrypts(pv: PrivateVault) -> None:
    keyadmin = role_client(pv.vault, pv.credentials["ivr-keyadmin"])
    with pytest.raises(VaultPermissionDenied):
        keyadmin.write(
            "transit/decrypt/ivr-dtmf",
            "decrypt",
            {"ciphertext": encrypt_v(pv, b"0000"), "context": CONTEXT},
        )


def test_operator_identity_from_make_run_only_without_vault_addr(
    pv: PrivateVault, tmp_path: Path
) -> None:
    """In a make run directory, .dev/ivr-keyadmin/ is the key-admin identity, and
    .dev/vault.env says where its Vault is; with VAULT_ADDR set, .dev/ is never read (the
    dev credentials must not be offered to another Vault)."""
    # Another spelling of the address: a VAULT_ADDR equal to .dev/vault.env's (no token)
    # is what `source .dev/vault.env` leaves behind, and is dropped (docs/deployment.md).
    other_spelling = pv.vault.addr.replace("127.0.0.1", "localhost")
    env = {
        k: v
        for k, v in pv.cli_env(VAULT_ADDR=other_spelling).items()
        if not k.startswith("VAULT_ROLE_ID") and not k.startswith("VAULT_SECRET_ID")
    }
    pv.credentials["ivr-keyadmin"].write(tmp_path / ".dev" / "ivr-keyadmin")
    (tmp_path / ".dev" / "vault.env").write_text(f"export VAULT_ADDR={pv.vault.addr}\n")
    nobody = pv.cli("keys", "status", "--json", env=env, cwd=tmp_path)
    assert nobody.returncode == 2
    assert "no key-admin identity" in nobody.stderr
    without_addr = {k: v for k, v in env.items() if k != "VAULT_ADDR"}
    found = pv.cli("keys", "status", "--json", env=without_addr, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert "ivr-dtmf" in json.loads(found.stdout)
    assert found.stderr == (
        f"ivr-vault: using the dev Vault at {pv.vault.addr} "
        "(.dev/vault.env), as ivr-keyadmin (.dev/ivr-keyadmin/)\n"
    )


def test_an_hmac_key_is_rotated_in_its_own_words_and_never_rewrapped(
    pv: PrivateVault,
) -> None:
    before = int(str(pv.key("ivr-lookup")["latest_version"]))
    rotated = pv.cli("keys", "rotate", "--key", "ivr-lookup")
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout == (
        f"ivr-lookup: rotated; new verifiers use v{before + 1} (each account's move to "
        f"v{before + 1} at its next successful lookup), older versions still verify until "
        "retired\n"
    )
    refused = pv.cli("keys", "rewrap", "--key", "ivr-lookup")
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr.splitlines() == [
        "ivr-vault: bad input: --key ivr-lookup: an HMAC key has no ciphertexts to rewrap "
        "(its verifiers move to the latest version at each account's next successful "
        "lookup; docs/keys.md)"
    ]


@pytest.mark.parametrize("command", [("rotate",), ("retire", "--older-than", "4h"), ("rewrap",)])
def test_a_key_that_does_not_exist_is_no_such_key(
    pv: PrivateVault, command: tuple[str, ...]
) -> None:
    """Not "permission denied": Vault answers 403 for a key outside the key-admin's
    policy, so the answer comes from a LIST of the mount's keys."""
    result = pv.cli("keys", *command, "--key", "nope")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "ivr-vault: bad input: --key nope: no such Transit key (keys under transit/: "
        "ivr-backup-sign, ivr-dtmf, ivr-lookup)"
    ]
