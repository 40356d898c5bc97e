"""service.vault.transit's pure helper: the derivation context. The ciphertext shape itself:
tests/unit/test_formats.py; Transit against a real Vault: tests/integration/."""

from __future__ import annotations

from service.vault.transit import call_context

SID_A = "CA" + "a" * 32


def test_context_binds_call_and_field() -> None:
    assert call_context(SID_A, "pin") == f"{SID_A}:pin".encode()
