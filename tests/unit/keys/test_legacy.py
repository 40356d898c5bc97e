"""service.keys.legacy: migrating the tutorial's AES-256-GCM key and ciphertexts into Transit.

The tutorial's format is re-implemented here independently (``cryptography``'s AESGCM), pinned
byte for byte to vectors produced by the tutorial's own Node.js ``encrypt`` (see
``TUTORIAL_ENCRYPT_JS``), and the whole path is checked against a real OpenBao dev server.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import pickle
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
import requests
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from service.errors import LegacyFormatError, LegacyImportError
from service.keys import legacy
from service.keys.legacy import (
    LegacyKey,
    convert_ciphertext,
    import_key,
    import_params,
    parse_legacy_key,
    wrap_key_for_import,
)

REPO = Path(__file__).resolve().parents[3]
BAO = REPO / ".venv" / "bin" / "bao"

# The test key published in the tutorial (reference/000_6d8fbaa8b5ff7101.txt).
TUTORIAL_KEY_HEX = "a154eb4c759711bc2538a7cc021e9e9f17dd8aa63151c62ca28a82a4a404203d"

# Produced by the tutorial's encrypt() (TUTORIAL_ENCRYPT_JS under Node 20) with
# crypto.randomBytes(12) pinned to 000102030405060708090a0b.
FIXED_NONCE = bytes(range(12))
KAT = [
    ("1234", "000102030405060708090a0b85829fbeb7905d3e86d3b8e6006c16030e2b42d0"),
    ("4321", "000102030405060708090a0b80839ebbba98bd12c45ac8cf89cb820e77c84971"),
    ("", "000102030405060708090a0b03679ea03ea176d05f4773b410789118"),
]

# The tutorial's AES function, verbatim apart from the export plumbing.
TUTORIAL_ENCRYPT_JS = r"""
const crypto = require("crypto")
const ALGORITHM = {
    BLOCK_CIPHER: "aes-256-gcm",
    AUTH_TAG_BYTE_SIZE: 16,
    IV_BYTE_SIZE: 12,
}
const encrypt = (plainText, key) => {
    const nonce = crypto.randomBytes(ALGORITHM.IV_BYTE_SIZE)
    const cipher = crypto.createCipheriv(
        ALGORITHM.BLOCK_CIPHER,
        Buffer.from(key, 'hex'),
        nonce,
        {
            authTagLength: ALGORITHM.AUTH_TAG_BYTE_SIZE
        }
    )
    const cipherText = Buffer.concat([
        nonce,
        cipher.update(plainText),
        cipher.final(),
        cipher.getAuthTag()
    ])
    return cipherText.toString('hex')
}
const input = JSON.parse(require("fs").readFileSync(0, "utf8"))
for (const p of input.plaintexts) console.log(encrypt(p, input.key))
"""


def tutorial_encrypt(key_hex: str, plaintext: str, nonce: bytes | None = None) -> str:
    """The tutorial's encrypt(), independently: hex(nonce12 || AES-256-GCM(ct || tag16))."""
    nonce = os.urandom(12) if nonce is None else nonce
    return (nonce + AESGCM(bytes.fromhex(key_hex)).encrypt(nonce, plaintext.encode(), None)).hex()


def tutorial_decrypt(key_hex: str, ciphertext_hex: str) -> str:
    raw = bytes.fromhex(ciphertext_hex)
    return AESGCM(bytes.fromhex(key_hex)).decrypt(raw[:12], raw[12:], None).decode()


def random_pin() -> str:
    return f"{secrets.randbelow(10_000):04d}"


def assert_not_leaked(message: str, secret: str) -> None:
    """Neither the input nor any 8-character piece of it appears in ``message``."""
    core = secret.strip()
    assert core not in message
    for i in range(max(0, len(core) - 7)):
        assert core[i : i + 8] not in message


# --------------------------------------------------------------------------- the format


@pytest.mark.parametrize(("plaintext", "expected_hex"), KAT)
def test_independent_implementation_matches_tutorial_vectors(
    plaintext: str, expected_hex: str
) -> None:
    assert tutorial_encrypt(TUTORIAL_KEY_HEX, plaintext, FIXED_NONCE) == expected_hex
    assert tutorial_decrypt(TUTORIAL_KEY_HEX, expected_hex) == plaintext


@pytest.mark.parametrize(("plaintext", "expected_hex"), KAT)
def test_convert_is_exact_reencoding_of_tutorial_vectors(plaintext: str, expected_hex: str) -> None:
    converted = convert_ciphertext(expected_hex)
    assert converted == "vault:v1:" + base64.b64encode(bytes.fromhex(expected_hex)).decode()
    raw = base64.b64decode(converted.removeprefix("vault:v1:"), validate=True)
    assert raw[:12] == FIXED_NONCE
    assert len(raw) == 12 + len(plaintext.encode()) + 16


def test_parsed_tutorial_key_is_the_documented_bytes() -> None:
    key = parse_legacy_key(TUTORIAL_KEY_HEX + "\n")
    assert key._material() == bytes.fromhex(TUTORIAL_KEY_HEX)
    assert key == LegacyKey(bytes.fromhex(TUTORIAL_KEY_HEX))


# --------------------------------------------------------------------------- parse_legacy_key


@pytest.mark.parametrize(
    "text",
    [
        TUTORIAL_KEY_HEX,
        TUTORIAL_KEY_HEX.upper(),
        TUTORIAL_KEY_HEX[:32].upper() + TUTORIAL_KEY_HEX[32:],
        f"  {TUTORIAL_KEY_HEX}\n",
        f"\t{TUTORIAL_KEY_HEX}\r\n",
    ],
)
def test_parse_key_accepts(text: str) -> None:
    assert parse_legacy_key(text)._material() == bytes.fromhex(TUTORIAL_KEY_HEX)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        TUTORIAL_KEY_HEX[:-1],  # 63
        TUTORIAL_KEY_HEX + "a",  # 65
        TUTORIAL_KEY_HEX[:-2],  # 31 bytes
        TUTORIAL_KEY_HEX + "00",  # 33 bytes
        TUTORIAL_KEY_HEX[:-1] + "g",
        TUTORIAL_KEY_HEX[:-1] + "\u0663",  # ARABIC-INDIC DIGIT THREE
        TUTORIAL_KEY_HEX[:-1] + "\uff10",  # FULLWIDTH DIGIT ZERO
        TUTORIAL_KEY_HEX[:32] + " " + TUTORIAL_KEY_HEX[33:],  # inner space, 64 chars
        TUTORIAL_KEY_HEX[:32] + " " + TUTORIAL_KEY_HEX[32:],  # inner space, 65 chars
        "0x" + TUTORIAL_KEY_HEX[2:],
        base64.b64encode(bytes.fromhex(TUTORIAL_KEY_HEX)).decode(),
        TUTORIAL_KEY_HEX + "\n" + TUTORIAL_KEY_HEX,
    ],
)
def test_parse_key_rejects_without_quoting_input(text: str) -> None:
    with pytest.raises(LegacyFormatError) as excinfo:
        parse_legacy_key(text)
    message = str(excinfo.value)
    if text.strip():
        assert_not_leaked(message, text)
    assert_not_leaked(repr(excinfo.value), TUTORIAL_KEY_HEX[4:40])
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__suppress_context__ or excinfo.value.__context__ is None


def test_parse_key_rejects_non_text() -> None:
    with pytest.raises(LegacyFormatError):
        parse_legacy_key(bytes.fromhex(TUTORIAL_KEY_HEX))  # type: ignore[arg-type]


def test_legacy_key_never_shows_its_bytes() -> None:
    key = parse_legacy_key(TUTORIAL_KEY_HEX)
    raw = bytes.fromhex(TUTORIAL_KEY_HEX)
    for shown in (repr(key), str(key), f"{key}", f"{key!r}", f"{key:>80}", "%s" % key):  # noqa: UP031
        assert shown == "LegacyKey(<redacted>)"
        assert_not_leaked(shown, TUTORIAL_KEY_HEX)
        assert repr(raw) not in shown
    assert repr([key]) == "[LegacyKey(<redacted>)]"
    assert not hasattr(key, "__dict__")


def test_legacy_key_refuses_pickle_copy_and_hash() -> None:
    key = parse_legacy_key(TUTORIAL_KEY_HEX)
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(TypeError):
        copy.copy(key)
    with pytest.raises(TypeError):
        hash(key)


@pytest.mark.parametrize("material", [b"", b"\x00" * 31, b"\x00" * 33, bytearray(32), "a" * 32])
def test_legacy_key_constructor_checks_material(material: Any) -> None:
    with pytest.raises(LegacyFormatError):
        LegacyKey(material)


# --------------------------------------------------------------------------- convert_ciphertext


def test_convert_round_trip_structure() -> None:
    for plaintext in ["1234", "", "日本語のテキスト", "x" * 1000]:
        line = tutorial_encrypt(TUTORIAL_KEY_HEX, plaintext)
        for variant in (line, line.upper(), f"  {line}\r\n"):
            converted = convert_ciphertext(variant)
            prefix, version, body = converted.split(":")
            assert (prefix, version) == ("vault", "v1")
            raw = base64.b64decode(body, validate=True)
            assert raw == bytes.fromhex(line)
            # the bytes are still exactly the tutorial's ciphertext
            assert tutorial_decrypt(TUTORIAL_KEY_HEX, raw.hex()) == plaintext


def test_convert_version() -> None:
    line = KAT[0][1]
    assert convert_ciphertext(line, version=7).startswith("vault:v7:")
    for bad in (0, -1, True, 1.0, "1"):
        with pytest.raises(ValueError):
            convert_ciphertext(line, version=bad)  # type: ignore[arg-type]


def test_convert_accepts_minimum_length() -> None:
    assert convert_ciphertext("00" * 28) == "vault:v1:" + base64.b64encode(bytes(28)).decode()


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("00" * 27, "too short"),
        ("ab", "too short"),
        (KAT[0][1][:-1], "odd"),
        (KAT[0][1][:-1] + "z", "not hex"),
        (KAT[0][1][:20] + " " + KAT[0][1][20:], "not hex"),
        (KAT[0][1][:20] + "\u0663" + KAT[0][1][21:], "not hex"),
        ("vault:v1:" + base64.b64encode(bytes.fromhex(KAT[0][1])).decode(), "not hex"),
        (base64.b64encode(bytes.fromhex(KAT[0][1])).decode(), "not hex"),
        ("0x" + KAT[0][1], "not hex"),
    ],
)
def test_convert_rejects_malformed_without_quoting_line(line: str, reason: str) -> None:
    with pytest.raises(LegacyFormatError) as excinfo:
        convert_ciphertext(line)
    message = str(excinfo.value)
    assert reason in message
    if len(line.strip()) >= 8:
        assert_not_leaked(message, line)
    assert excinfo.value.__cause__ is None


def test_convert_rejects_non_text() -> None:
    with pytest.raises(LegacyFormatError):
        convert_ciphertext(bytes.fromhex(KAT[0][1]))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- wrapping (pure)


@pytest.fixture(scope="module")
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    )


def test_wrap_key_unwraps_to_the_key(rsa_private: rsa.RSAPrivateKey) -> None:
    key = parse_legacy_key(TUTORIAL_KEY_HEX)
    blob = base64.b64decode(wrap_key_for_import(key, _pem(rsa_private)), validate=True)
    rsa_len = rsa_private.key_size // 8
    assert len(blob) == rsa_len + 40  # KWP of 32 bytes = 40 bytes
    ephemeral = rsa_private.decrypt(
        blob[:rsa_len],
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    assert len(ephemeral) == 32
    assert aes_key_unwrap_with_padding(ephemeral, blob[rsa_len:]) == bytes.fromhex(TUTORIAL_KEY_HEX)
    # a fresh ephemeral key every time
    assert wrap_key_for_import(key, _pem(rsa_private)) != wrap_key_for_import(
        key, _pem(rsa_private)
    )


def test_wrap_key_rejects_bad_wrapping_keys() -> None:
    key = parse_legacy_key(TUTORIAL_KEY_HEX)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    for pem in ("", "not a pem", _pem(ec.generate_private_key(ec.SECP256R1())), _pem(small)):
        with pytest.raises(LegacyFormatError) as excinfo:
            wrap_key_for_import(key, pem)
        assert_not_leaked(str(excinfo.value), TUTORIAL_KEY_HEX)
    with pytest.raises(TypeError):
        wrap_key_for_import(TUTORIAL_KEY_HEX, _pem(small))  # type: ignore[arg-type]


def test_import_params() -> None:
    params = import_params()
    assert params["type"] == "aes256-gcm96"
    assert params["hash_function"] == "SHA256"
    # Omitted, not false: the key-admin policy denies these parameters whatever their value
    # (the defaults are false; test_imported_key_is_not_derived_not_exportable checks them).
    assert "exportable" not in params
    assert "allow_plaintext_backup" not in params
    assert params["allow_rotation"] is True
    assert params["derived"] is False
    assert "ciphertext" not in params
    params["exportable"] = True  # a fresh dict each call: callers cannot poison the default
    assert "exportable" not in import_params()


class _Untouchable:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError("client must not be used")


@pytest.mark.parametrize("name", ["", "../sys", "a/b", "a b", "ivr-legacy/import", "..", "-x"])
def test_import_key_validates_name_before_any_call(name: str) -> None:
    with pytest.raises(ValueError):
        import_key(_Untouchable(), name, parse_legacy_key(TUTORIAL_KEY_HEX))


def test_import_key_validates_mount_point() -> None:
    with pytest.raises(ValueError):
        import_key(
            _Untouchable(), "ivr-legacy", parse_legacy_key(TUTORIAL_KEY_HEX), mount_point="../sys"
        )


# --------------------------------------------------------------------------- real OpenBao


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[hvac.Client]:
    """A throwaway OpenBao dev server with transit enabled, as a root-token client."""
    if not BAO.exists():
        pytest.fail(f"OpenBao binary not found at {BAO}")
    home = tmp_path_factory.mktemp("bao-home")  # dev mode writes ~/.vault-token: keep it here
    token = secrets.token_urlsafe(24)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = home / "bao.log"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "BAO_DEV_ROOT_TOKEN_ID": token}
    with log_path.open("wb") as log:  # the dev server prints its root token: never to our output
        proc = subprocess.Popen(
            [str(BAO), "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if requests.get(f"{url}/v1/sys/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"OpenBao dev server did not come up (log: {log_path})")
            time.sleep(0.05)
        client = hvac.Client(url=url, token=token, timeout=10)
        assert client.is_authenticated()
        client.sys.enable_secrets_engine("transit", path="transit")
        import_key(client, "ivr-legacy", parse_legacy_key(TUTORIAL_KEY_HEX))
        yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_ciphertexts_from_the_tutorials_own_code_decrypt_in_transit(
    bao: hvac.Client, tmp_path: Path
) -> None:
    plaintexts = [random_pin() for _ in range(5)] + ["4321"]
    script = tmp_path / "aes.js"
    script.write_text(TUTORIAL_ENCRYPT_JS)
    node = shutil.which("node")
    assert node is not None
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


def test_module_exports() -> None:
    for symbol in legacy.__all__:
        assert hasattr(legacy, symbol)
