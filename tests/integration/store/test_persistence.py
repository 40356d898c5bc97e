"""A Vault that forgets nothing, as a developer meets it: ``make run`` (the launcher process,
tests/support/devrun.py), ``accounts add``, Ctrl-C, ``make run`` again, and the account is
served; ``make run`` pointed at another Vault with the old store is refused with one line
naming ``ivr-lookup``, and stops instead of waiting.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.devtools.devstack import DevVault
from service.store.accounts import Store
from service.vault.bootstrap import Layout
from service.vault.client import VaultClient
from tests.support.demo import FOUND
from tests.support.devrun import (
    ADDED_NUMBER,
    ADDED_STDIN,
    READY_LINE,
    DevRun,
    call,
    ctrl_c,
    descendants,
    ivr_vault,
    vault_env,
)
from tests.support.store import put

ADDED = "Thank you. Your account number is AC55556666 and your balance is 7.00"


def ready(run: DevRun) -> float:
    """Seconds from the launcher's start to its "ivr-vault is running" block."""
    started = time.monotonic()
    run.wait_for(READY_LINE)
    return time.monotonic() - started


def test_accounts_survive_ctrl_c_and_make_run_again(start_dev: Callable[..., DevRun]) -> None:
    run = start_dev()
    first = ready(run)
    assert "demo account AC12345678 provisioned" in run.output()
    assert "unseal key and root token (dev only) in .dev/vault-keys.dev-only" in run.output()
    assert (run.state / "vault.env").read_text().startswith("# DEV ONLY")
    added = ivr_vault(
        run,
        "accounts",
        "add",
        "--account",
        "AC55556666",
        "--balance",
        "7.00",
        stdin=ADDED_STDIN,
        **vault_env(run),
    )
    assert added.returncode == 0, added.stderr
    assert call(run, "7351", card="5555", number=ADDED_NUMBER).stdout.splitlines()[-1] == ADDED

    # The dev-only keys: beside the data, private, and saying what they are.
    keyring = run.state / "vault-keys.dev-only"
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
    assert keyring.read_text().startswith("# DEV ONLY")
    root = vault_env(run)["VAULT_TOKEN"]
    assert f"root_token={root}" in keyring.read_text()
    assert (run.state / "vault-data").is_dir()
    for argv in descendants(run.process.pid).values():  # not on any command line
        assert not any(root in arg for arg in argv)
    assert ctrl_c(run) == 0

    again = start_dev()
    restart = ready(again)
    out = again.output()
    # The demo account is there already: said once, not written over.
    assert "demo account AC12345678 already in the store; not seeded again" in out
    assert "provisioned" not in out
    assert "vault initialised" not in out  # the same Vault, unsealed, not a new one
    assert call(again, "7351", card="5555", number=ADDED_NUMBER).stdout.splitlines()[-1] == ADDED
    assert call(again, "4321").stdout.splitlines()[-1] == FOUND
    assert vault_env(again)["VAULT_TOKEN"] == root
    assert ctrl_c(again) == 0
    print(f"make run ready: first start {first:.1f} s, restart {restart:.1f} s")


@pytest.fixture
def another_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevVault]:
    vault = DevVault.start(tmp_path_factory.mktemp("another-vault"))
    yield vault
    vault.stop()


def test_another_vault_with_the_old_store_is_refused(
    start_dev: Callable[..., DevRun], another_vault: DevVault
) -> None:
    run = start_dev()
    ready(run)
    assert ctrl_c(run) == 0

    refused = start_dev(**another_vault.env())  # VAULT_ADDR and VAULT_TOKEN set
    started = time.monotonic()
    code = refused.process.wait(timeout=60)
    took = time.monotonic() - started
    out = refused.output()
    assert code == 1, out
    lines = [line for line in out.splitlines() if "[error" in line and "ivr-lookup" in line]
    assert len(lines) == 1, out
    assert "cannot reproduce the account store's canary" in lines[0]
    assert (
        "restore Vault from the backup that matches this store: docs/backup.md#restore" in lines[0]
    )
    assert "ivr-vault: the backend is not ready: ivr-lookup" in out
    assert READY_LINE not in out
    assert took < 30
    # The Vault it was given keeps running; the services it started are gone.
    assert another_vault.process is not None and another_vault.process.poll() is None
    # The same check from the command line.
    checked = ivr_vault(refused, "accounts", "check-keys", **another_vault.env())
    assert checked.returncode == 1
    assert "ivr-lookup: this Vault cannot reproduce" in checked.stderr


def test_check_keys_adopts_a_store_from_before_canaries(
    dev_vault: DevVault, layout: Layout, tmp_path: Path
) -> None:
    """Verifiers stored without a canary: refused until an operator who knows this Vault
    made them adopts its canaries; then checked like any other."""
    store_path = tmp_path / "old.sqlite3"
    admin = VaultClient(dev_vault.addr, dev_vault.root_token, timeout=10)
    number_v, card_v, pin_v = [
        r["hmac"]
        for r in admin.write(
            "transit/hmac/ivr-lookup",
            "hmac",
            {
                "batch_input": [
                    {"input": "YWNjdG5vOjMxNDE1OTI2"},
                    {"input": "Y2FyZDoxMjM0"},
                    {"input": "cGluOjEyMzQ6NDMyMQ=="},
                ]
            },
        )["data"]["batch_results"]
    ]
    store = Store(store_path)
    put(store, number=number_v, card=card_v, pin=pin_v)  # as before canaries
    store.close()
    env = {**dev_vault.env(), "STORE_PATH": str(store_path)}
    before = cli(tmp_path, "accounts", "check-keys", **env)
    assert before.returncode == 1
    assert "no canary (a store made before canaries)" in before.stderr
    assert cli(tmp_path, "accounts", "check-keys", "--adopt", **env).returncode == 0
    after = cli(tmp_path, "accounts", "check-keys", **env)
    assert after.returncode == 0, after.stderr
    assert "reproduces the account store's canaries" in after.stdout


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=cwd,
        capture_output=True,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), **env},
        text=True,
        timeout=60,
        check=False,
    )
