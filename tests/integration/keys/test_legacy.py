"""service.keys.legacy against a real OpenBao dev server: the imported tutorial key is not
derived and not exportable, ciphertexts made by the tutorial's format (and by the tutorial's
own Node.js code) decrypt in Transit after conversion, tampering fails, and the key rotates,
rewraps and retires. The format on its own: tests/unit/keys/test_legacy.py.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
from cryptography.exceptions import InvalidTag

from service.devtools.devstack import DevVault
from service.errors import LegacyImportError
from service.keys.legacy import convert_ciphertext, import_key, parse_legacy_key
from tests.support.tools import require
from tests.support.tutorial import (
    KAT,
    TUTORIAL_ENCRYPT_JS,
    TUTORIAL_KEY_HEX,
    random_pin,
    tutorial_decrypt,
    tutorial_encrypt,
)


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[hvac.Client]:
    """A throwaway OpenBao dev server with transit enabled, as a root-token client."""
    vault = DevVault.start(tmp_path_factory.mktemp("bao"))
    try:
        client = hvac.Client(url=vault.addr, token=vault.root_token.reveal(), timeout=10)
        assert client.is_authenticated()
        client.sys.enable_secrets_engine("transit", path="transit")
        import_key(client, "ivr-legacy", parse_legacy_key(TUTORIAL_KEY_HEX))
        yield client
    finally:
        vault.stop()


def transit_decrypt(client: hvac.Client, name: str, ciphertext: str) -> str:
    resp = client.secrets.transit.decrypt_data(name, ciphertext)
    return base64.b64decode(resp["data"]["plaintext"]).decode()


def test_imported_key_is_not_derived_not_exportable(bao: hvac.Client) -> None:
    data = bao.secrets.transit.read_key("ivr-legacy")["data"]
    assert data["type"] == "aes256-gcm96"
    assert data["derived"] is False
    assert data["exportable"] is False
    assert data["allow_plaintext_backup"] is False
    assert data["imported_key"] is True
    assert data["imported_key_allow_rotation"] is True
    assert data["latest_version"] == 1
    with pytest.raises(hvac.exceptions.InvalidRequest, match="not exportable"):
        bao.secrets.transit.export_key("ivr-legacy", "encryption-key")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="not exportable"):
        bao.secrets.transit.export_key("ivr-legacy", "encryption-key", version="1")


def test_exportable_false_is_only_as_strong_as_policy(bao: hvac.Client) -> None:
    """OpenBao 2.7.2 lets ``keys/NAME/config`` turn ``exportable`` on later (one way), after
    which the imported material can be exported. So "never exportable" rests on no policy
    granting ``exportable`` on ``transit/keys/*/config`` (see policies/ivr-keyadmin.hcl)."""
    name = "ivr-legacy-flip"  # never the shared key: the flip cannot be undone
    import_key(bao, name, parse_legacy_key(secrets.token_hex(32)))
    transit = bao.secrets.transit
    transit.update_key_configuration(name, exportable=True)
    assert transit.read_key(name)["data"]["exportable"] is True
    assert "1" in transit.export_key(name, "encryption-key")["data"]["keys"]
    transit.update_key_configuration(name, exportable=False)  # accepted, silently ignored
    assert transit.read_key(name)["data"]["exportable"] is True


def test_tutorial_ciphertexts_decrypt_in_transit(bao: hvac.Client) -> None:
    plaintexts = [random_pin() for _ in range(8)] + ["0000", "1234", "", "日本語", "x" * 500]
    for plaintext in plaintexts:
        line = tutorial_encrypt(TUTORIAL_KEY_HEX, plaintext)
        assert transit_decrypt(bao, "ivr-legacy", convert_ciphertext(line)) == plaintext
    for plaintext, line in KAT:
        assert transit_decrypt(bao, "ivr-legacy", convert_ciphertext(line)) == plaintext


def test_ciphertexts_from_the_tutorials_own_code_decrypt_in_transit(
    bao: hvac.Client, tmp_path: Path
) -> None:
    plaintexts = [random_pin() for _ in range(5)] + ["4321"]
    script = tmp_path / "aes.js"
    script.write_text(TUTORIAL_ENCRYPT_JS)
    node = require("node")
    out = subprocess.run(
        [node, str(script)],
        input=json.dumps({"key": TUTORIAL_KEY_HEX, "plaintexts": plaintexts}),
        capture_output=True,
        text=True,
        check=True,
        timeout=15,
    ).stdout
    lines = out.splitlines()
    assert len(lines) == len(plaintexts)
    for plaintext, line in zip(plaintexts, lines, strict=True):
        assert tutorial_decrypt(TUTORIAL_KEY_HEX, line) == plaintext
        assert transit_decrypt(bao, "ivr-legacy", convert_ciphertext(line)) == plaintext


@pytest.mark.parametrize("position", [0, 11, 12, -17, -1])  # nonce, ciphertext, tag
def test_flipped_byte_fails_in_transit(bao: hvac.Client, position: int) -> None:
    raw = bytearray(bytes.fromhex(tutorial_encrypt(TUTORIAL_KEY_HEX, "1234")))
    raw[position] ^= 0x01
    with pytest.raises(hvac.exceptions.InvalidRequest, match="authentication failed"):
        bao.secrets.transit.decrypt_data("ivr-legacy", convert_ciphertext(raw.hex()))


def test_wrong_key_fails_in_transit(bao: hvac.Client) -> None:
    line = tutorial_encrypt(secrets.token_hex(32), "1234")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="authentication failed"):
        bao.secrets.transit.decrypt_data("ivr-legacy", convert_ciphertext(line))


def test_import_refuses_existing_key(bao: hvac.Client) -> None:
    other = parse_legacy_key(secrets.token_hex(32))
    with pytest.raises(LegacyImportError):
        import_key(bao, "ivr-legacy", other)
    # the original key is untouched
    line = tutorial_encrypt(TUTORIAL_KEY_HEX, "1234")
    assert transit_decrypt(bao, "ivr-legacy", convert_ciphertext(line)) == "1234"


def test_rotate_rewrap_and_retire_v1(bao: hvac.Client) -> None:
    name = "ivr-legacy-rotation"  # its own copy, so the other tests see an unrotated key
    import_key(bao, name, parse_legacy_key(TUTORIAL_KEY_HEX))
    transit = bao.secrets.transit
    lines = {pt: tutorial_encrypt(TUTORIAL_KEY_HEX, pt) for pt in (random_pin(), "4321")}
    converted = {pt: convert_ciphertext(line) for pt, line in lines.items()}

    transit.rotate_key(name)
    assert transit.read_key(name)["data"]["latest_version"] == 2

    pin, v1 = next(iter(converted.items()))
    v2 = transit.rewrap_data(name, v1)["data"]["ciphertext"]
    assert v2.startswith("vault:v2:")
    assert transit_decrypt(bao, name, v2) == pin
    # the new version is new key material: not the tutorial key any more
    raw_v2 = base64.b64decode(v2.removeprefix("vault:v2:"))
    with pytest.raises(InvalidTag):
        tutorial_decrypt(TUTORIAL_KEY_HEX, raw_v2.hex())
    # before retiring v1, converted v1 ciphertexts still decrypt
    for pt, ct in converted.items():
        assert transit_decrypt(bao, name, ct) == pt

    transit.update_key_configuration(name, min_decryption_version=2)
    assert transit.read_key(name)["data"]["min_decryption_version"] == 2
    for ct in converted.values():
        with pytest.raises(hvac.exceptions.InvalidRequest, match="disallowed by policy"):
            transit.decrypt_data(name, ct)
    assert transit_decrypt(bao, name, v2) == pin
    assert transit.read_key(name)["data"]["exportable"] is False
