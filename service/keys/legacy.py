"""Migrating users of the original Twilio tutorial to Transit (bring your own key).

The tutorial kept one AES-256 key as 64 hex characters (``AES_SECRET``) and stored each
ciphertext as ``hex(nonce[12] || AES-256-GCM ciphertext || tag[16])`` with no associated data.
That is byte for byte what a Transit ``aes256-gcm96`` key (not derived) produces after its
``vault:vN:`` prefix and base64. So migration is:

1. import the tutorial key into Transit once, wrapped for Transit's BYOK endpoint
   (:func:`parse_legacy_key`, :func:`wrap_key_for_import`, :func:`import_key`);
2. re-encode each stored ciphertext (:func:`convert_ciphertext`) — a pure change of notation,
   nothing is decrypted, so whoever runs it never sees a plaintext.

Errors are :class:`LegacyFormatError`, whose messages never contain the offending input (it may
be a key or a ciphertext). :class:`LegacyKey` never shows its bytes in ``repr``/``str`` and
refuses to be pickled or copied into logs by accident.
"""

from __future__ import annotations

import base64
import re
import secrets
from typing import Any, Final, NoReturn

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from service.errors import LegacyFormatError, LegacyImportError

__all__ = [
    "IMPORT_HASH_FUNCTION",
    "IMPORT_KEY_TYPE",
    "KEY_BYTES",
    "NONCE_BYTES",
    "TAG_BYTES",
    "LegacyKey",
    "convert_ciphertext",
    "import_key",
    "import_params",
    "parse_legacy_key",
    "wrap_key_for_import",
]

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
MIN_CIPHERTEXT_BYTES: Final = NONCE_BYTES + TAG_BYTES  # ciphertext of the empty plaintext

IMPORT_KEY_TYPE: Final = "aes256-gcm96"
IMPORT_HASH_FUNCTION: Final = "SHA256"  # the OAEP hash below; Transit must be told the same
_EPHEMERAL_KEY_BYTES: Final = 32
_MIN_WRAPPING_KEY_BITS: Final = 2048  # Transit's is RSA-4096; refuse anything toy-sized

_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
# Transit key and mount names: no slashes, no "..", nothing that could change the URL path.
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_MOUNT_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}(/[A-Za-z0-9][A-Za-z0-9_-]{0,127})*")


class LegacyKey:
    """A tutorial AES-256 key (32 bytes). Its bytes never appear in ``repr`` or ``str``."""

    __slots__ = ("__material",)

    def __init__(self, material: bytes) -> None:
        if not isinstance(material, bytes) or len(material) != KEY_BYTES:
            raise LegacyFormatError(f"legacy key must be exactly {KEY_BYTES} bytes")
        self.__material = material

    def __repr__(self) -> str:
        return "LegacyKey(<redacted>)"

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> NoReturn:
        raise TypeError("LegacyKey cannot be pickled or copied")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LegacyKey):
            return NotImplemented
        return secrets.compare_digest(self.__material, other.__material)

    def __hash__(self) -> int:
        raise TypeError("LegacyKey is not hashable")

    def _material(self) -> bytes:
        """The raw key bytes, for this module's wrapping only."""
        return self.__material


def _is_hex(text: str) -> bool:
    return all(ch in _HEX_DIGITS for ch in text)


def parse_legacy_key(text: str) -> LegacyKey:
    """Parse the tutorial's ``AES_SECRET``: exactly 64 hex digits (either case), surrounding
    whitespace ignored. Raises :class:`LegacyFormatError` (never quoting the input)."""
    if not isinstance(text, str):
        raise LegacyFormatError("legacy key must be text")
    stripped = text.strip()
    if len(stripped) != 2 * KEY_BYTES:
        raise LegacyFormatError(f"legacy key must be exactly {2 * KEY_BYTES} hex characters")
    if not _is_hex(stripped):
        raise LegacyFormatError("legacy key is not hex")
    return LegacyKey(bytes.fromhex(stripped))


def _load_wrapping_key(wrapping_key_pem: str) -> rsa.RSAPublicKey:
    try:
        public_key = serialization.load_pem_public_key(wrapping_key_pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError, UnsupportedAlgorithm):
        raise LegacyFormatError("wrapping key is not a PEM public key") from None
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise LegacyFormatError("wrapping key is not an RSA public key")
    if public_key.key_size < _MIN_WRAPPING_KEY_BITS:
        raise LegacyFormatError("wrapping key is too small")
    return public_key


def wrap_key_for_import(key: LegacyKey, wrapping_key_pem: str) -> str:
    """Wrap ``key`` for ``POST <transit>/keys/<name>/import`` (the ``ciphertext`` field).

    A fresh random 32-byte AES key is encrypted with Transit's wrapping key (RSA-OAEP,
    SHA-256, MGF1-SHA-256, no label); ``key`` is wrapped under it with AES-KWP (RFC 5649).
    Returns base64(rsa_ciphertext || kwp_ciphertext). Send with
    ``hash_function=IMPORT_HASH_FUNCTION``.
    """
    if not isinstance(key, LegacyKey):
        raise TypeError("key must be a LegacyKey (use parse_legacy_key)")
    public_key = _load_wrapping_key(wrapping_key_pem)
    ephemeral = secrets.token_bytes(_EPHEMERAL_KEY_BYTES)
    wrapped_ephemeral = public_key.encrypt(
        ephemeral,
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    wrapped_key = aes_key_wrap_with_padding(ephemeral, key._material())
    return base64.b64encode(wrapped_ephemeral + wrapped_key).decode("ascii")


def convert_ciphertext(line: str, *, version: int = 1) -> str:
    """Re-encode one tutorial ciphertext (hex of nonce || ct || tag) as a Transit ciphertext
    ``vault:v<version>:`` + base64 of the same bytes. Nothing is decrypted or checked
    cryptographically: Transit authenticates it at decryption.

    Raises :class:`LegacyFormatError` with a reason that never quotes ``line``.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError("version must be a positive integer")
    if not isinstance(line, str):
        raise LegacyFormatError("ciphertext must be text")
    stripped = line.strip()
    if not stripped:
        raise LegacyFormatError("empty ciphertext")
    if not _is_hex(stripped):
        raise LegacyFormatError("ciphertext is not hex")
    if len(stripped) % 2:
        raise LegacyFormatError("ciphertext has an odd number of hex digits")
    raw = bytes.fromhex(stripped)
    if len(raw) < MIN_CIPHERTEXT_BYTES:
        raise LegacyFormatError(
            f"ciphertext too short (needs at least {MIN_CIPHERTEXT_BYTES} bytes: "
            f"{NONCE_BYTES}-byte nonce and {TAG_BYTES}-byte tag)"
        )
    return f"vault:v{version}:" + base64.b64encode(raw).decode("ascii")


def import_params() -> dict[str, Any]:
    """Parameters (besides ``ciphertext``) for importing a tutorial key into Transit:
    a plain (not derived) ``aes256-gcm96`` key, so converted ciphertexts decrypt without a
    context; rotatable so it can be rotated away from the legacy material.

    ``exportable`` and ``allow_plaintext_backup`` are deliberately absent: their defaults are
    false, and policies/ivr-keyadmin.hcl denies both parameters on import whatever their
    value, so sending them (even as false) would make the key-admin's import a 403."""
    return {
        "type": IMPORT_KEY_TYPE,
        "hash_function": IMPORT_HASH_FUNCTION,
        "allow_rotation": True,
        "derived": False,
    }


def import_key(client: Any, name: str, key: LegacyKey, *, mount_point: str = "transit") -> None:
    """Import ``key`` into Transit as key ``name`` via BYOK, with :func:`import_params`.

    ``client`` is an authenticated ``hvac.Client`` (needs ``read`` on
    ``<mount>/wrapping_key`` and ``update`` on ``<mount>/keys/<name>/import``). hvac has no
    helper for these endpoints, so this uses ``client.read`` / ``client.write_data``; it also
    reads ``<mount>/keys/<name>`` first and raises :class:`LegacyImportError` if that key
    exists, because OpenBao answers an import onto an existing key with HTTP 500
    (hvac ``InternalServerError``), which looks like an outage. Other hvac exceptions
    propagate unchanged.
    """
    if not _NAME_RE.fullmatch(name):
        raise ValueError("invalid Transit key name")
    if not _MOUNT_RE.fullmatch(mount_point):
        raise ValueError("invalid Transit mount point")
    if client.read(f"{mount_point}/keys/{name}") is not None:
        raise LegacyImportError("a Transit key with that name already exists; not importing")
    response = client.read(f"{mount_point}/wrapping_key")
    try:
        pem = response["data"]["public_key"]
    except (KeyError, TypeError):
        raise LegacyFormatError("Transit returned no wrapping key") from None
    if not isinstance(pem, str):
        raise LegacyFormatError("Transit returned no wrapping key")
    data = {"ciphertext": wrap_key_for_import(key, pem), **import_params()}
    client.write_data(f"{mount_point}/keys/{name}/import", data=data)
