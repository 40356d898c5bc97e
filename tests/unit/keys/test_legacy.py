"""service.keys.legacy: migrating the tutorial's AES-256-GCM key and ciphertexts into Transit.

The tutorial's format is re-implemented independently (tests/support/tutorial.py), pinned
byte for byte to vectors produced by the tutorial's own Node.js ``encrypt``; the whole path
against a real OpenBao dev server is tests/integration/keys/test_legacy.py.
"""

from __future__ import annotations

import base64
import copy
import pickle
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from service.errors import LegacyFormatError
from service.keys import legacy
from service.keys.legacy import (
    LegacyKey,
    convert_ciphertext,
    import_key,
    import_params,
    parse_legacy_key,
    wrap_key_for_import,
)
from tests.support.tutorial import (
    FIXED_NONCE,
    KAT,
    TUTORIAL_KEY_HEX,
    tutorial_decrypt,
    tutorial_encrypt,
)


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


def test_module_exports() -> None:
    for symbol in legacy.__all__:
        assert hasattr(legacy, symbol)
