"""``ivr-vault accounts import`` on real OpenBao and both engines (docs/security.md,
identification): rows added,
bad rows refused by line number without a digit of them, a re-run skipping what is
present, ``--update``, and an import SIGKILLed midway completed by a re-run with no
duplicates. The files are made by service/devtools/accounts_file.py (the bench's too).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from service.devtools import accounts_file
from service.devtools.devstack import DevVault
from service.settings import StoreUrl
from service.store.accounts import Store
from service.vault.bootstrap import RoleCredentials
from tests.support.postgres import env_for
from tests.support.stack import make_stack
from tests.support.store import query

GOOD = 50


class Importer:
    def __init__(self, env: dict[str, str], cwd: Path, url: StoreUrl) -> None:
        self.env, self.cwd, self.url = env, cwd, url
        self.said: list[str] = []

    def command(self, path: Path, *flags: str) -> list[str]:
        return [sys.executable, "-m", "service", "accounts", "import", str(path), *flags]

    def __call__(self, path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.command(path, *flags),
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        self.said.append(done.stdout + done.stderr)
        return done

    def count(self, sql: str = "SELECT COUNT(*) FROM accounts") -> int:
        store = Store(self.url, pool_size=1)
        try:
            return int(query(store, sql)[0][0])
        finally:
            store.close()


@pytest.fixture
def importer(
    dev_vault: DevVault,
    credentials: dict[str, RoleCredentials],
    store_url: StoreUrl,
    tmp_path: Path,
) -> Importer:
    stack = make_stack(
        dev_vault, credentials, tmp_path, backend_env=env_for(store_url), start=False
    )  # the backend's identity and this store; no services
    return Importer({**stack.backend.env, "PATH": os.environ.get("PATH", "")}, tmp_path, store_url)


def refusals(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if " line " in line]


def digits_of(rows: Iterable[Sequence[Any]], *, pins: bool = True) -> set[str]:
    """The entries of ``rows`` that no output may show: account numbers, callers, PINs
    (not for thousands of rows: their PINs cover most 4-digit strings, a year included)."""
    return {value for r in rows for value in (r[2], *r[5], *([r[4]] if pins else []))}


def ours_removed(text: str) -> str:
    """``text`` without the numbers the importer itself prints (a rate, a count of calls,
    log timestamps), where a 4-digit PIN could turn up by chance."""
    text = re.sub(r"\(\d+ rows/s[^)]*\)", "", text)
    return re.sub(r'"timestamp": "[^"]*"', "", text)


def test_bad_rows_are_refused_by_line_and_a_rerun_skips_what_is_present(importer: Importer) -> None:
    good = list(accounts_file.rows(GOOD))
    bad = [  # line numbers 52.. (the header is line 1)
        ("GENWEAKPIN", "1.00", "31313131", "4242", "2580", ["+15557770001"]),
        ("GENNUMBERTAKEN", "1.00", good[0][2], "4242", "8163", []),
        ("GENBADCALLER", "1.00", "32323232", "4242", "8163", ["5557770002"]),
        ("GENBADAMOUNT", "12.345", "33333333", "4242", "8163", []),
    ]
    path = accounts_file.write(importer.cwd / "accounts.csv", GOOD)
    with path.open("a") as out:
        for r in bad:
            out.write(",".join((*r[:5], ";".join(r[5]))) + "\n")
        out.write("GENMALFORMED,1.00,34343434,4242\n")

    first = importer(path)
    assert first.returncode == 2, first.stderr
    assert refusals(first) == [
        "ivr-vault: accounts.csv line 52: PIN refused: one of the 100 most common PINs; "
        "choose another",
        "ivr-vault: accounts.csv line 53: that account number is already enrolled on "
        "another account",
        "ivr-vault: accounts.csv line 54: caller number: expected E.164 (+ then up to 15 digits)",
        "ivr-vault: accounts.csv line 55: balance: expected an amount such as 12.55",
        "ivr-vault: accounts.csv line 56: malformed: expected 6 columns (account,balance,"
        "account_number,card_last4,pin,callers)",
    ]
    assert first.stdout.strip().startswith(
        f"ivr-vault: import accounts.csv: 55 rows: {GOOD} added, 0 already present, "
        "0 updated, 5 refused"
    )
    assert importer.count() == GOOD + 1  # and the demo account

    again = importer(path)
    assert again.returncode == 2 and len(refusals(again)) == 5
    assert f"55 rows: 0 added, {GOOD} already present, 0 updated, 5 refused" in again.stdout
    clean = importer(accounts_file.write(importer.cwd / "clean.csv", GOOD))
    assert (clean.returncode, refusals(clean)) == (0, [])
    assert importer.count() == GOOD + 1

    # Other content under a label present: refused, unless --update.
    changed = list(good)
    changed[3] = (*good[3][:1], "999.99", *good[3][2:])
    changed[4] = (*good[4][:4], accounts_file.pin(4 + 1), good[4][5])
    jsonl = importer.cwd / "changed.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps(
                dict(
                    zip(
                        ("account", "balance", "account_number", "card_last4", "pin", "callers"),
                        r,
                        strict=True,
                    )
                )
            )
            + "\n"
            for r in changed
        )
        + "not json\n"
    )
    refused = importer(jsonl)
    assert refused.returncode == 2
    assert [line.split(": ", 1)[1] for line in refusals(refused)] == [
        f"changed.jsonl line 4: account {good[3][0]} already exists with other content "
        "(--update replaces it)",
        f"changed.jsonl line 5: account {good[4][0]} already exists with other content "
        "(--update replaces it)",
        "changed.jsonl line 51: malformed: expected one JSON object with the keys account, "
        "balance, account_number, card_last4, pin, callers (callers a list, the others "
        "strings)",
    ]
    updated = importer(jsonl, "--update")
    assert updated.returncode == 2 and "2 updated, 1 refused" in updated.stdout
    settled = importer(jsonl, "--update")
    assert f"0 added, {GOOD} already present, 0 updated, 1 refused" in settled.stdout

    everything = ours_removed("\n".join(importer.said))
    assert not [d for d in digits_of(good + bad + changed) if d in everything]


def test_an_import_killed_midway_completes_on_a_rerun_without_duplicates(
    importer: Importer,
) -> None:
    total = 30_000
    path = accounts_file.write(importer.cwd / "big.csv", total)
    started = subprocess.Popen(
        importer.command(path),
        cwd=importer.cwd,
        env=importer.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while importer.count() < 3_000 and started.poll() is None:
            assert time.monotonic() < deadline, "the import wrote nothing in 120 s"
            time.sleep(0.05)
        started.send_signal(signal.SIGKILL)
    finally:
        out, err = started.communicate(timeout=30)
    assert started.returncode == -signal.SIGKILL
    before = importer.count()
    assert 1 < before < total + 1, "killed after the end: nothing to resume"

    resumed = importer(path)
    assert resumed.returncode == 0, resumed.stderr
    assert (
        f"{total} rows: {total + 1 - before} added, {before - 1} already present, "
        "0 updated, 0 refused" in resumed.stdout
    )
    assert importer.count() == total + 1
    assert importer.count("SELECT COUNT(DISTINCT number_verifier) FROM accounts") == total + 1
    assert importer.count("SELECT COUNT(*) FROM caller_registrations") == total + 1
    assert not [
        d
        for d in digits_of(accounts_file.rows(total), pins=False)
        if d in out + err + resumed.stdout + resumed.stderr
    ]
