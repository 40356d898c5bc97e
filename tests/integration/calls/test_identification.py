"""Identification before verification (docs/security.md, identification), end to end on both
engines: real
OpenBao, real backend and webhook processes, accounts enrolled by the real CLI, calls
played by the simulator (service/devtools/caller.py).

One stack per engine, with small limits so that every limit is reached in a few calls,
and CALLER_ID_REQUIRES_ATTESTATION on: a registered-phone call here carries Twilio's full
attestation unless a test says otherwise. (The registered-phone path with the setting off,
the default: tests/integration/calls/test_call_flow.py. The migration from the release before:
test_store_migration.py.)
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.backend.enrolment import DEMO_ACCOUNT_NUMBER
from service.devtools.caller import REGISTERED, Caller
from service.devtools.devstack import DevVault
from service.vault.bootstrap import RoleCredentials
from service.webhook import twiml
from tests.support.postgres import ENGINES, pg_store_url
from tests.support.stack import Stack, make_stack

ATTESTED = "TN-Validation-Passed-A"
LIMITS = {
    "LOCKOUT_THRESHOLD": "3",
    "LOCKOUT_HARD_LIMIT": "6",
    "CALLER_FAILURE_LIMIT": "3",
    "WITHHELD_FAILURE_LIMIT": "3",
    "WITHHELD_FAILURE_WINDOW": "4s",
    "CALLER_ID_REQUIRES_ATTESTATION": "on",
}
# Two customers whose cards end in the same four digits and who chose the same PIN.
TWINS = (
    ("AC70000001", "31.00", "52718364", "+15550100001"),
    ("AC70000002", "32.00", "63829475", "+15550100002"),
)
CARD, PIN = "5678", "7351"


def found(account: str, balance: str) -> str:
    return f"Thank you. Your account number is {account} and your balance is {balance}"


@dataclass
class Bench:
    stack: Stack
    cwd: Path

    def add(
        self,
        account: str,
        balance: str,
        lines: str,
    ) -> subprocess.CompletedProcess[str]:
        """``ivr-vault accounts add`` with the backend's identity, the entries on stdin."""
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "service",
                "accounts",
                "add",
                "--account",
                account,
                "--balance",
                balance,
            ],
            input=lines,
            cwd=self.cwd,
            env={**self.stack.backend.env, "HOME": str(self.cwd)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def call(
        self,
        card: str,
        pin: str,
        *,
        identify: str = REGISTERED,
        caller: str = "+15005550006",
        stir: str | None = ATTESTED,
    ) -> list[str]:
        heard: list[str] = []
        with httpx.Client(timeout=20) as client:
            result = Caller(
                self.stack.webhook.url,
                self.stack.twilio_token,
                client,
                say=heard.append,
                caller=caller,
                identify=identify,
                stir_verstat=stir,
            ).play([card, pin])
        assert result.completed and set(result.statuses) == {200}
        return heard

    def lookups(self, outcome: str) -> float:
        return self.metric("ivr_lookups_total", outcome=outcome)

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.stack.backend.url + "/metrics", timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and sample.labels == labels
        )


@pytest.fixture(scope="module", params=ENGINES)
def bench(
    request: pytest.FixtureRequest,
    dev_vault: DevVault,
    credentials: dict[str, RoleCredentials],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Bench]:
    directory = tmp_path_factory.mktemp(f"identification-{request.param}")
    store: dict[str, str] = {}
    if request.param == "postgresql":
        url = pg_store_url(request.getfixturevalue("postgres"), "identification")
        assert url.conninfo is not None
        store = {"STORE_URL": url.conninfo.reveal()}
    running = make_stack(
        dev_vault, credentials, directory, backend_env={**LIMITS, **store}, webhook_env=LIMITS
    )
    bench = Bench(running, directory)
    for account, balance, number, caller in TWINS:
        added = bench.add(account, balance, f"{number}\n{CARD}\n{PIN}\n{caller}\n")
        assert added.returncode == 0, added.stderr
    yield bench
    running.stop()


def test_same_card_and_pin_on_two_accounts_each_found_only_by_its_own_identification(
    bench: Bench,
) -> None:
    for account, balance, number, caller in TWINS:
        assert bench.call(CARD, PIN, identify=number)[-1] == found(account, balance)
        assert bench.call(CARD, PIN, caller=caller)[-1] == found(account, balance)
    # The store holds no digit of them, and no two equal verifiers.
    raw = bench.stack.store_path.read_bytes() if bench.stack.store_path.exists() else b""
    for _, _, number, caller in TWINS:
        assert number.encode() not in raw and caller[1:].encode() not in raw


def test_prompts_before_the_result_are_the_same_for_registered_and_unregistered_numbers(
    bench: Bench,
) -> None:
    registered = bench.call(CARD, PIN, caller=TWINS[0][3])
    unregistered = bench.call(CARD, PIN, caller="+15550100999")
    assert (
        registered[:-1]
        == unregistered[:-1]
        == [twiml.ask_account(8), twiml.ASK_CARD, twiml.ASK_PIN]
    )
    assert registered[-1] == found(*TWINS[0][:2])
    assert unregistered[-1] == twiml.NOT_FOUND  # an unregistered number on the star path


def test_without_full_attestation_the_registered_path_is_a_failure(bench: Bench) -> None:
    before = bench.lookups("not_found")
    for stir in (None, "TN-Validation-Passed-B", "No-TN-Validation"):
        assert bench.call(CARD, PIN, caller=TWINS[1][3], stir=stir)[-1] == twiml.NOT_FOUND
    assert bench.lookups("not_found") == before + 3
    # The account-number path does not depend on it (from another number: that one has
    # reached CALLER_FAILURE_LIMIT).
    assert bench.call(CARD, PIN, identify=TWINS[1][2], caller="+15550100003", stir=None)[
        -1
    ] == found(*TWINS[1][:2])


def test_a_spray_of_account_numbers_is_cut_off_per_caller_and_locks_per_account(
    bench: Bench,
) -> None:
    """CALLER_FAILURE_LIMIT=3: a number that guessed three account numbers hears the
    goodbye without a lookup, even with a real one; LOCKOUT_THRESHOLD=3: three wrong PINs
    on one account, each from another number, lock it, whoever calls next."""
    cut_before, locked_before = bench.lookups("caller_cut_off"), bench.lookups("locked")
    for guess in ("10000001", "10000002", "10000003"):
        assert bench.call(CARD, PIN, identify=guess, caller="+15550109001")[-1] == twiml.NOT_FOUND
    assert (
        bench.call(CARD, PIN, identify=DEMO_ACCOUNT_NUMBER, caller="+15550109001")[-1]
        == twiml.NOT_FOUND
    )
    assert bench.lookups("caller_cut_off") == cut_before + 1
    number = "85274196"  # an account of its own: the others stay unlocked
    added = bench.add("AC70000003", "33.00", f"{number}\n{CARD}\n{PIN}\n")
    assert added.returncode == 0, added.stderr
    for n in range(3):
        assert (
            bench.call(CARD, "2580", identify=number, caller=f"+1555010910{n}")[-1]
            == twiml.NOT_FOUND
        )
    assert bench.call(CARD, PIN, identify=number, caller="+15550109109")[-1] == twiml.NOT_FOUND
    assert bench.lookups("locked") == locked_before + 1
    assert bench.metric("ivr_lockouts_total", kind="card") >= 1
    # The other accounts with the same card and PIN are untouched.
    assert bench.call(CARD, PIN, identify=TWINS[0][2], caller="+15550109110")[-1] == found(
        *TWINS[0][:2]
    )


def test_withheld_callers_are_cut_off_only_for_their_buckets_window(bench: Bench) -> None:
    """WITHHELD_FAILURE_LIMIT=3 in WITHHELD_FAILURE_WINDOW=4s: a burst of failures from
    withheld numbers cuts every withheld caller off, for the window only; callers with a
    number are not affected."""
    number = TWINS[1][2]
    for guess in ("20000001", "20000002", "20000003"):
        assert bench.call(CARD, PIN, identify=guess, caller="anonymous")[-1] == twiml.NOT_FOUND
    started = time.monotonic()
    cut = bench.lookups("caller_cut_off")
    assert bench.call(CARD, PIN, identify=number, caller="Restricted")[-1] == twiml.NOT_FOUND
    assert bench.lookups("caller_cut_off") == cut + 1
    assert bench.call(CARD, PIN, identify=number, caller="+15550109200")[-1] == found(*TWINS[1][:2])
    time.sleep(max(0.0, 4.5 - (time.monotonic() - started)))
    assert bench.call(CARD, PIN, identify=number, caller="anonymous")[-1] == found(*TWINS[1][:2])


def test_enrolment_refusals_are_one_plain_line_and_exit_2(bench: Bench) -> None:
    """A malformed entry is bad input; a well-formed one the rules refuse says why."""
    cases = {
        (
            "AC70000001",
            "1.00",
            f"74185296\n1111\n{PIN}\n",
        ): "ivr-vault: account AC70000001 already exists; change it with "
        "`ivr-vault accounts update`",
        (
            "AC70000009",
            "1.00",
            f"{TWINS[0][2]}\n1111\n{PIN}\n",
        ): "ivr-vault: that account number is already enrolled on another account",
        (
            "AC70000009",
            "1.00",
            f"70000009\n1111\n{PIN}\n",
        ): "ivr-vault: account number: must not be the digits of the account's label "
        "(the label is read back to callers; the account number is a secret)",
        (
            "AC70000009",
            "1.00",
            "74185296\n1111\n1234\n",
        ): "ivr-vault: PIN refused: a straight sequence of digits; choose another",
        (
            "AC70000009",
            "lots",
            f"74185296\n1111\n{PIN}\n",
        ): "ivr-vault: bad input: balance: expected an amount such as 12.55",
        (
            "AC70000009",
            "1.00",
            f"74185296\n{CARD}\n3917\n{TWINS[0][3]}\n",
        ): "ivr-vault: a caller number is already registered on another account with the "
        "same card last-4 (the two could not be told apart)",
        (
            "AC70000009",
            "1.00",
            f"7418529\n{CARD}\n{PIN}\n",
        ): "ivr-vault: bad input: account number: expected exactly 8 digits",
        (
            "AC70000009",
            "1.00",
            f"74185296\n{CARD}\n{PIN}\n5550100001\n",
        ): "ivr-vault: bad input: caller number: expected E.164 (+ then up to 15 digits)",
    }
    for (account, balance, lines), line in cases.items():
        refused = bench.add(account, balance, lines)
        assert (refused.returncode, refused.stderr.splitlines()[-1:], refused.stdout) == (
            2,
            [line],
            "",
        ), lines
        assert "74185296" not in refused.stderr
    # A household: the same number on another account with another card is fine.
    added = bench.add("AC70000009", "1.00", f"74185296\n4826\n3917\n{TWINS[0][3]}\n")
    assert added.returncode == 0, added.stderr
    assert bench.call("4826", "3917", caller=TWINS[0][3])[-1] == found("AC70000009", "1.00")
    assert bench.call(CARD, PIN, caller=TWINS[0][3])[-1] == found(*TWINS[0][:2])
