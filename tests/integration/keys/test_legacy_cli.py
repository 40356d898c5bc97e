"""The tutorial migration path end to end with ``ivr-vault legacy`` and ``ivr-vault keys``, on a
private real OpenBao: import the AES_SECRET (stdin or a no-echo prompt), convert ciphertexts
made by an independent implementation of the tutorial's format, then rotate, rewrap, retire.
"""

from __future__ import annotations

import base64
import json
import os
import pty
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.errors import VaultRequestError
from service.store.sealed import SealedStore
from tests.support.keys import PrivateVault, private_vault
from tests.support.tutorial import tutorial_encrypt

KEY_HEX = secrets.token_hex(32)


@pytest.fixture(scope="module")
def pv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateVault]:
    with private_vault(tmp_path_factory.mktemp("legacy-cli")) as vault:
        yield vault


def transit_decrypt(pv: PrivateVault, ciphertext: str, key: str = "ivr-legacy") -> str:
    data = pv.admin.write(f"transit/decrypt/{key}", "decrypt", {"ciphertext": ciphertext})
    return base64.b64decode(data["data"]["plaintext"]).decode()


def test_import_key_reads_stdin_as_keyadmin(pv: PrivateVault) -> None:
    bad = pv.cli("legacy", "import-key", input="not-a-key-" + KEY_HEX[:20] + "\n")
    assert bad.returncode == 2
    assert bad.stderr.startswith("ivr-vault: bad input: ") and "64 hex" in bad.stderr
    assert KEY_HEX[:20] not in bad.stderr + bad.stdout

    done = pv.cli("legacy", "import-key", input=KEY_HEX + "\n")
    assert done.returncode == 0, done.stderr
    assert KEY_HEX not in done.stdout + done.stderr
    data = pv.key("ivr-legacy")
    assert (
        data["type"],
        data["derived"],
        data["exportable"],
        data["allow_plaintext_backup"],
        data["imported_key"],
        data["latest_version"],
    ) == ("aes256-gcm96", False, False, False, True, 1)

    again = pv.cli("legacy", "import-key", input=secrets.token_hex(32) + "\n")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_import_key_prompts_without_echo_on_a_terminal(pv: PrivateVault) -> None:
    key_hex = secrets.token_hex(32)
    # A root token here only because the key-admin policy allows importing ivr-legacy alone.
    env = {k: v for k, v in pv.cli_env().items() if "_ID_FILE" not in k}
    env["VAULT_TOKEN"] = pv.vault.root_token.reveal()
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "legacy", "import-key", "--name", "ivr-legacy-tty"],
        env=env,
        cwd=pv.dir,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    transcript = b""
    try:
        deadline = time.monotonic() + 30
        while b"not echoed): " not in transcript:
            assert time.monotonic() < deadline, transcript
            if select.select([controller], [], [], 0.5)[0]:
                transcript += os.read(controller, 4096)
        os.write(controller, key_hex.encode() + b"\n")
        assert process.wait(timeout=30) == 0
        while select.select([controller], [], [], 0.2)[0]:
            try:
                chunk = os.read(controller, 4096)
            except OSError:
                break
            if not chunk:
                break
            transcript += chunk
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert key_hex.encode() not in transcript  # getpass turned echo off
    assert b"tutorial key imported" in transcript
    assert pv.key("ivr-legacy-tty")["imported_key"] is True


def test_convert_rejects_a_bad_line_without_quoting_it(pv: PrivateVault) -> None:
    before = SealedStore(pv.store_path).version_counts("ivr-legacy")
    lines = [tutorial_encrypt(KEY_HEX, "1234"), "zz" + KEY_HEX[:30]]
    result = pv.cli("legacy", "convert", "--store", input="\n".join(lines) + "\n")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        "ivr-vault: bad input: line 2: ciphertext is not hex; nothing converted"
    )
    assert KEY_HEX[:30] not in result.stderr
    assert SealedStore(pv.store_path).version_counts("ivr-legacy") == before


def test_migration_convert_rotate_rewrap_retire(pv: PrivateVault) -> None:
    plaintexts = [f"{secrets.randbelow(10_000):04d}" for _ in range(20)] + ["1234", "日本語"]
    lines = [tutorial_encrypt(KEY_HEX, p) for p in plaintexts]

    converted = pv.cli("legacy", "convert", "--store", input="\n".join(lines) + "\n")
    assert converted.returncode == 0, converted.stderr
    transit_cts = converted.stdout.splitlines()
    assert len(transit_cts) == len(plaintexts)
    assert all(ct.startswith("vault:v1:") for ct in transit_cts)
    assert f"stored {len(plaintexts)} records under ivr-legacy" in converted.stderr
    assert [transit_decrypt(pv, ct) for ct in transit_cts] == plaintexts
    status = json.loads(pv.cli("keys", "status", "--json").stdout)
    assert status["ivr-legacy"]["stored_records"] == {"1": len(plaintexts)}

    assert pv.cli("keys", "rotate", "--key", "ivr-legacy").returncode == 0
    rewrapped = pv.cli("keys", "rewrap", "--key", "ivr-legacy")
    assert rewrapped.returncode == 0, rewrapped.stderr
    assert f"rewrapped {len(plaintexts)} records to v2" in rewrapped.stdout
    time.sleep(2.1)
    retired = pv.cli(
        "keys",
        "retire",
        "--key",
        "ivr-legacy",
        "--older-than",
        "1s",
        env=pv.cli_env(CALL_MAX_AGE="1s"),
    )
    assert retired.returncode == 0, retired.stderr
    assert pv.key("ivr-legacy")["min_decryption_version"] == 2

    store = SealedStore(pv.store_path)
    assert store.version_counts("ivr-legacy") == {2: len(plaintexts)}
    stored = [r for r in (store.get(i) for i in range(1, len(plaintexts) + 1)) if r]
    assert [transit_decrypt(pv, r.ciphertext) for r in stored] == plaintexts
    # The tutorial key now opens nothing the service keeps: it can be destroyed.
    raw_v2 = base64.b64decode(stored[0].ciphertext.removeprefix("vault:v2:"))
    with pytest.raises(InvalidTag):
        AESGCM(bytes.fromhex(KEY_HEX)).decrypt(raw_v2[:12], raw_v2[12:], None)
    with pytest.raises(VaultRequestError):
        transit_decrypt(pv, transit_cts[0])  # v1 is retired in Transit too
