"""``make run`` (``python -m service dev``) as a developer runs it: a subprocess in its own
directory, on free ports, stopped with Ctrl-C. Everything it starts must stop with it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from service.devtools.devstack import DevVault, free_port
from service.devtools.postgres import LocalPostgres
from service.errors import ServiceNotReady
from service.settings import Secret
from service.store.accounts import Store
from service.store.migrations import LATEST
from service.vault.client import VaultClient
from tests.support.demo import FOUND
from tests.support.devrun import (
    READY_LINE,
    DevRun,
    alive,
    base_env,
    call,
    descendants,
    vault_env,
)
from tests.support.postgres import pg_store_url


def test_dev_runs_the_whole_stack_and_ctrl_c_stops_it(start_dev: Callable[..., DevRun]) -> None:
    run = start_dev()
    run.wait_for(READY_LINE)
    out = run.output()
    webhook_url = f"http://127.0.0.1:{run.webhook_port}"
    assert f"webhook  {webhook_url}" in out
    assert f"backend  http://127.0.0.1:{run.env['BACKEND_PORT']}" in out
    # No --url: call finds this stack in .dev/cluster.json (test_operator_cli.py)
    assert "Place a test call:\n  .venv/bin/ivr-vault call --card 1234 --pin 4321\n" in out

    # .dev/vault.env: both spellings, private, and the bao CLI works from it alone.
    env_vars = vault_env(run)
    assert set(env_vars) == {"VAULT_ADDR", "VAULT_TOKEN", "BAO_ADDR", "BAO_TOKEN"}
    assert env_vars["VAULT_ADDR"] == env_vars["BAO_ADDR"]
    assert env_vars["VAULT_TOKEN"] == env_vars["BAO_TOKEN"]
    assert (run.state / "vault.env").stat().st_mode & 0o777 == 0o600
    assert (run.state / "vault-audit.log").exists()
    bao = str(Path(sys.executable).with_name("bao"))
    rotated = subprocess.run(
        ["bash", "-c", 'source .dev/vault.env && "$BAO_BIN" write -f transit/keys/ivr-dtmf/rotate'],
        cwd=run.cwd,
        env=base_env(run.cwd, BAO_BIN=bao),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert rotated.returncode == 0, rotated.stderr
    admin = VaultClient(env_vars["VAULT_ADDR"], Secret(env_vars["VAULT_TOKEN"]), timeout=5)
    assert admin.read("transit/keys/ivr-dtmf", "read key")["data"]["latest_version"] == 2

    # No secret on any command line: not the root token (by env to bao), nor the others.
    secrets = [
        env_vars["VAULT_TOKEN"],
        (run.state / "twilio-auth-token").read_text().strip(),
        (run.state / "backend-token").read_text().strip(),
    ]
    children = descendants(run.process.pid)
    assert any(Path(argv[0]).name == "bao" for argv in children.values())
    assert sum("serve" in argv for argv in children.values()) == 2
    for argv in children.values():
        assert not any(secret in arg for secret in secrets for arg in argv)

    # TWILIO_AUTH_TOKEN unset: a dev token was generated, and `call` finds it.
    assert (run.state / "twilio-auth-token").stat().st_mode & 0o777 == 0o600
    ok = call(run, "4321")
    assert ok.returncode == 0, ok.stderr + ok.stdout
    assert ok.stdout.splitlines()[-1] == FOUND
    wrong = call(run, "0000")
    assert wrong.stdout.splitlines()[-1] == "We were not able to locate you in our system. Goodbye."
    assert "NDMyMQ==" not in (run.state / "vault-audit.log").read_text()  # base64 "4321"

    # A second `dev` in the same directory fails at once, and says why.
    started = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-m", "service", "dev"],
        cwd=run.cwd,
        env=run.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert time.monotonic() - started < 10
    assert second.returncode == 2
    assert "already running in this directory" in second.stderr
    assert str(run.process.pid) in second.stderr
    assert run.process.poll() is None

    # Ctrl-C: SIGINT to the whole foreground process group, as a terminal sends it.
    os.killpg(run.process.pid, signal.SIGINT)
    assert run.process.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [argv for pid, argv in children.items() if alive(pid)]
    assert "ivr-vault: stopping." in run.output()


@pytest.fixture
def own_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevVault]:
    """Not the session's: `make run` issues the roles' secret-ids, which destroys the
    others, the session's services' among them."""
    vault = DevVault.start(tmp_path_factory.mktemp("own-vault"))
    yield vault
    vault.stop()


def test_dev_on_an_existing_vault_honours_twilio_auth_token(
    start_dev: Callable[..., DevRun], own_vault: DevVault
) -> None:
    """VAULT_ADDR + VAULT_TOKEN: no Vault of its own; TWILIO_AUTH_TOKEN from the environment
    signs the calls. SIGINT to the launcher alone, even one started with SIGINT ignored,
    still stops both services, and leaves the Vault it did not start running."""
    dev_vault = own_vault
    token = "test-twilio-token-from-env"
    run = start_dev(sigint_ignored=True, TWILIO_AUTH_TOKEN=token, **dev_vault.env())
    run.wait_for(READY_LINE)
    assert f"Using the Vault at {dev_vault.addr}" in run.output()
    assert not (run.state / "vault.env").exists()
    children = descendants(run.process.pid)
    assert not any(Path(argv[0]).name == "bao" for argv in children.values())

    assert (run.state / "twilio-auth-token").read_text().strip() == token
    ok = call(run, "4321", TWILIO_AUTH_TOKEN=token)
    assert ok.stdout.splitlines()[-1] == FOUND
    refused = call(run, "4321", TWILIO_AUTH_TOKEN="some-other-token")
    assert refused.returncode == 1
    assert "[webhook answered HTTP 403]" in refused.stdout

    run.process.send_signal(signal.SIGINT)
    assert run.process.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [argv for pid, argv in children.items() if alive(pid)]
    assert VaultClient(dev_vault.addr, dev_vault.root_token, timeout=5).health()["sealed"] is False


def test_a_killed_launcher_leaves_no_orphans(start_dev: Callable[..., DevRun]) -> None:
    """SIGKILL cannot be caught: the children die with their parent (PR_SET_PDEATHSIG)."""
    run = start_dev()
    run.wait_for(READY_LINE)
    children = descendants(run.process.pid)
    assert len(children) >= 3  # bao, backend, webhook
    run.process.kill()
    run.process.wait(timeout=10)
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [argv for pid, argv in children.items() if alive(pid)]


def test_dev_on_a_postgresql_store(
    start_dev: Callable[..., DevRun], postgres: LocalPostgres
) -> None:
    """STORE_URL set: make run migrates that store, seeds the demo account into it, and
    its backend serves from it; no SQLite file is made."""
    url = pg_store_url(postgres, "make_run", migrated=False)
    assert url.conninfo is not None
    run = start_dev(STORE_URL=url.conninfo.reveal())
    run.wait_for(READY_LINE)
    out = run.output()
    assert f"ivr-vault: account store {url.display}: migrated to version {LATEST}" in out
    assert "demo account AC12345678 provisioned" in out
    assert call(run, "4321").stdout.splitlines()[-1] == FOUND
    assert not (run.state / "accounts.sqlite3").exists()
    with closing(Store(url)) as store:
        assert store.has_account("AC12345678")


@pytest.mark.parametrize("setting", ["WEBHOOK_PORT", "BACKEND_PORT", "DEV_VAULT_PORT"])
def test_a_taken_port_stops_make_run_before_it_starts_anything(
    start_dev: Callable[..., DevRun], setting: str
) -> None:
    """The error names the port and the setting that moves it, in one line, and nothing
    was started: no Vault data, no process left."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        run = start_dev(**{setting: str(port)})
        assert run.process.wait(timeout=60) == 2
    out = run.output()
    assert f"port {port} on 127.0.0.1 is taken" in out and f"set {setting}" in out, out
    assert "Traceback" not in out and "*" not in out
    assert not (run.state / "vault-data").exists()


def test_a_vault_that_exits_at_start_is_named_by_pid_port_and_log(tmp_path: Path) -> None:
    """The launcher's own start-up error: which process (its PID), on which port, and
    where it said why; not a foreign RuntimeError that ends in "unexpected error"."""
    with pytest.raises(ServiceNotReady) as caught:
        DevVault.start(tmp_path, port=(port := free_port()), binary="/bin/false")
    message = str(caught.value)
    assert re.fullmatch(
        rf"pid [0-9]+ exited with status 1 before http://127\.0\.0\.1:{port}/v1/sys/health "
        rf"answered \(its log: {re.escape(str(tmp_path / 'vault-server.log'))}\)",
        message,
    )
