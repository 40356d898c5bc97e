"""An account's life through the real CLI (docs/security.md, identification): add, list, update
(balance, PIN
reset, card change, caller numbers), remove, on real OpenBao and both engines. Digits go
in on stdin only; no output and no log line carries one; audit lines name the account by
its letters-only reference.

Whether the verifiers really changed is read back through ``accounts import``: a row
with the account's current content is skipped ("already present"), any other refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.devtools import accounts_file
from service.devtools.devstack import DevVault
from service.settings import StoreUrl
from service.vault.bootstrap import RoleCredentials
from tests.support.postgres import env_for
from tests.support.stack import make_stack

ACCOUNT = "ACLIFECYCLE"
NUMBER, CARD, PIN, NEW_CARD, NEW_PIN = "48152342", "2468", "7391", "1357", "8264"
PHONE, OTHER_PHONE = "+15550142001", "+15550142002"
SECRETS = (NUMBER, CARD, PIN, NEW_CARD, NEW_PIN, PHONE[1:], OTHER_PHONE[1:])
HEADER = "account,balance,account_number,card_last4,pin,callers\n"


class Cli:
    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd, self.outputs = env, cwd, []  # type: ignore[var-annotated]

    def __call__(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "service", "accounts", *args],
            input=stdin,
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        self.outputs.append(done.stdout + done.stderr)
        return done

    def listed(self) -> dict[str, dict[str, object]]:
        done = self("list", "--json")
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in done.stdout.splitlines()]
        return {str(row["account"]): row for row in rows}

    def matches(self, card: str, pin: str, callers: str, balance: str) -> bool:
        """Whether the account holds exactly this content (an import skips it)."""
        path = self.cwd / "probe.csv"
        path.write_text(HEADER + f"{ACCOUNT},{balance},{NUMBER},{card},{pin},{callers}\n")
        done = self("import", str(path))
        return done.returncode == 0 and "1 already present" in done.stdout


@pytest.fixture
def cli(
    dev_vault: DevVault,
    credentials: dict[str, RoleCredentials],
    store_url: StoreUrl,
    tmp_path: Path,
) -> Cli:
    stack = make_stack(
        dev_vault, credentials, tmp_path, backend_env=env_for(store_url), start=False
    )
    return Cli({**stack.backend.env, "PATH": os.environ.get("PATH", "")}, tmp_path)


def test_an_account_is_added_listed_changed_and_removed(cli: Cli) -> None:
    added = cli(
        "add",
        "--account",
        ACCOUNT,
        "--balance",
        "10.00",
        stdin=f"{NUMBER}\n{CARD}\n{PIN}\n{PHONE}\n\n",
    )
    assert added.returncode == 0, added.stderr
    row = cli.listed()[ACCOUNT]
    assert row["identified_by"] == ["caller", "account_number"]
    assert (row["locked"], row["failures"], row["last_success"]) == (False, 0, None)
    reference = str(row["reference"])
    assert reference.isalpha()
    assert cli.matches(CARD, PIN, PHONE, "10.00")

    assert cli("update", "--account", ACCOUNT, "--balance", "12.5x").returncode == 2
    assert cli("update", "--account", ACCOUNT, "--balance", "20.00").returncode == 0
    # A PIN reset must name the account's own card; a weak PIN is refused.
    wrong = cli("update", "--account", ACCOUNT, "--reset-pin", stdin=f"{NEW_CARD}\n{NEW_PIN}\n")
    assert (wrong.returncode, wrong.stderr.strip()) == (
        2,
        "ivr-vault: card last-4: not the account's card (a new card: "
        "`ivr-vault accounts update --change-card`)",
    )
    weak = cli("update", "--account", ACCOUNT, "--reset-pin", stdin=f"{CARD}\n1111\n")
    assert weak.returncode == 2 and "PIN refused" in weak.stderr
    reset = cli("update", "--account", ACCOUNT, "--reset-pin", stdin=f"{CARD}\n{NEW_PIN}\n")
    assert reset.returncode == 0, reset.stderr
    assert cli.matches(CARD, NEW_PIN, PHONE, "20.00")
    assert not cli.matches(CARD, PIN, PHONE, "20.00")
    changed = cli("update", "--account", ACCOUNT, "--change-card", stdin=f"{NEW_CARD}\n{PIN}\n")
    assert changed.returncode == 0, changed.stderr
    assert cli.matches(NEW_CARD, PIN, PHONE, "20.00")

    more = cli(
        "update", "--account", ACCOUNT, "--add-callers", stdin=f"{NEW_CARD}\n{OTHER_PHONE}\n\n"
    )
    assert more.returncode == 0, more.stderr
    assert cli.matches(NEW_CARD, PIN, f"{PHONE};{OTHER_PHONE}", "20.00")
    fewer = cli("update", "--account", ACCOUNT, "--remove-callers", stdin=f"{PHONE}\n{PHONE}\n\n")
    assert fewer.returncode == 0 and "1 of 2 caller numbers unregistered" in fewer.stdout
    assert cli.matches(NEW_CARD, PIN, OTHER_PHONE, "20.00")
    fewer = cli("update", "--account", ACCOUNT, "--remove-callers", stdin=f"{OTHER_PHONE}\n")
    assert fewer.returncode == 0, fewer.stderr
    assert cli.listed()[ACCOUNT]["identified_by"] == ["account_number"]

    removed = cli("remove", "--account", ACCOUNT)
    assert removed.returncode == 0, removed.stderr
    assert ACCOUNT not in cli.listed()
    gone = cli("remove", "--account", ACCOUNT)
    assert (gone.returncode, gone.stderr.strip()) == (2, f"ivr-vault: no account {ACCOUNT}")
    nothing = cli("update", "--account", ACCOUNT, "--balance", "1.00")
    assert (nothing.returncode, nothing.stderr.strip()) == (2, f"ivr-vault: no account {ACCOUNT}")

    everything = "\n".join(cli.outputs)
    assert not [s for s in SECRETS if s in everything]
    audit = [
        json.loads(line)
        for out in cli.outputs
        for line in out.splitlines()
        if line.startswith("{") and "by an operator" in line
    ]
    assert {line["event"] for line in audit} == {
        "account added by an operator",
        "account changed by an operator",
        "account removed by an operator",
        "accounts imported by an operator",
    }
    assert {line.get("account_ref") for line in audit} == {reference, None}
    assert all(
        line.get("account_ref")
        for line in audit
        if line["event"] != "accounts imported by an operator"
    )


def test_the_listing_streams_in_pages(cli: Cli) -> None:
    """More accounts than one page (the store reads 1,000 at a time): each once."""
    done = cli("import", str(accounts_file.write(cli.cwd / "many.csv", 2_500)))
    assert done.returncode == 0, done.stderr
    listed = cli("list", "--json").stdout.splitlines()
    accounts = [json.loads(line)["account"] for line in listed]
    assert len(accounts) == len(set(accounts)) == 2_501  # and the demo account
    table = cli("list").stdout.splitlines()
    assert table[0].split()[:2] == ["account", "reference"] and len(table) == 2_502
