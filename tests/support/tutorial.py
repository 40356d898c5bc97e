"""The tutorial's AES-256-GCM format, re-implemented independently of service.keys.legacy
(``cryptography``'s AESGCM) and pinned byte for byte to vectors produced by the tutorial's
own Node.js ``encrypt`` (``TUTORIAL_ENCRYPT_JS``)."""

from __future__ import annotations

import os
import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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
