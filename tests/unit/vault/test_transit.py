"""service.vault.transit's pure helpers: the derivation context and a ciphertext's version.
Transit against a real Vault: tests/integration/test_transit.py."""

from __future__ import annotations

from service.vault.transit import call_context, ciphertext_version

SID_A = "CA" + "a" * 32


def test_context_and_version_helpers() -> None:
    assert call_context(SID_A, "pin") == f"{SID_A}:pin".encode()
    assert ciphertext_version("vault:v7:QUJD") == 7
    for bad in ("", "vault:v0:QUJD", "vault:v1:", "vault:v1:QU JD", "vault:v1:QUJD\n",
                "VAULT:v1:QUJD", "vault:v1:QUJD?x", "vault:v1234567890:QUJD"):
        assert ciphertext_version(bad) is None, bad
