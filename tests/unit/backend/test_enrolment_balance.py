"""Enrolment refuses a balance that is not an amount of BALANCE_CURRENCY, before anything
reaches Vault or the store (the store path below does not exist and is never created)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.backend.enrolment import Enrolment, add_account
from service.errors import EnrolmentRefused
from service.settings import Settings


def test_a_yen_balance_with_cents_is_refused_before_vault(tmp_path: Path) -> None:
    settings = Settings.from_environ(
        {
            "BALANCE_CURRENCY": "JPY",
            "STORE_PATH": str(tmp_path / "never.sqlite3"),
            "VAULT_ADDR": "http://127.0.0.1:9",
        }
    )
    with pytest.raises(EnrolmentRefused) as refused:
        add_account(
            settings,
            Enrolment(
                account="AC87654321",
                balance="12.55",
                account_number="52718364",
                last4="8642",
                pin="5813",
            ),
        )
    assert str(refused.value) == (
        "balance: JPY has no minor units; write a whole number such as 1255"
    )
    assert not (tmp_path / "never.sqlite3").exists()
