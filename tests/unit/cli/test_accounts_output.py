"""What ``accounts list`` and ``accounts import`` print (service/cli/accounts_output.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from service.backend.importing import Summary
from service.cli import accounts_output
from service.cli.accounts_output import Reporter, json_line, table_line
from service.store.accounts import AccountSummary
from service.store.ledger import CardState

NOW = 1_800_000_000.0


def test_a_listing_line_says_how_an_account_is_found_and_its_lock() -> None:
    locked = AccountSummary(
        "ACA", "QWERTYUIOPAS", True, 2, False, CardState(5, NOW + 60, False), NOW - 3600
    )
    assert json.loads(json_line(locked, NOW)) == {
        "account": "ACA",
        "reference": "QWERTYUIOPAS",
        "identified_by": ["caller", "account_number"],
        "callers": 2,
        "legacy_card": False,
        "locked": True,
        "hard_locked": False,
        "failures": 5,
        "last_success": "2027-01-15T07:00:00+00:00",
    }
    migrated = AccountSummary("ACB", "ASDFGHJKLZXC", False, 0, True, CardState(), None)
    row = json.loads(json_line(migrated, NOW))
    assert (row["identified_by"], row["locked"], row["last_success"]) == ([], False, None)
    assert "card only (migrated)" in table_line(migrated, NOW)
    assert "hard-locked" in table_line(
        AccountSummary("ACC", "ZXCVBNMASDFG", True, 0, False, CardState(10, 0, True), None), NOW
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.csv"
    path.write_text("x" * 1000)
    so_far = Summary(rows=4000, seconds=2.0)
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    bar = Reporter(path)
    bar.progress(so_far, 500)
    assert terminal.getvalue() == f"\r[{'#' * 15}{'.' * 15}]  50% 4,000 rows 2,000/s "
    bar.refuse(7, "PIN refused: one digit repeated; choose another")
    assert terminal.getvalue().endswith(
        "\rivr-vault: a.csv line 7: PIN refused: one digit repeated; choose another\n"
    )

    plain = io.StringIO()
    monkeypatch.setattr("sys.stderr", plain)
    monkeypatch.setattr(accounts_output, "PLAIN_EVERY_S", 0.0)
    lines = Reporter(path)
    lines.progress(so_far, 500)
    assert plain.getvalue() == "ivr-vault: import a.csv: 4000 rows read (2000 rows/s)\n"
