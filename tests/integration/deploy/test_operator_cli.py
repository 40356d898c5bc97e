"""The operator's side of ``make run``, as a person meets it: the first lines show the real
ports and PIDs, and from another terminal (a clean environment, the same directory)
``ivr-vault keys status``, ``accounts add`` and ``doctor`` find the dev Vault and the right
identity, say which in one line, log nothing else unless asked (-v), and fail in one line."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.support.demo import FOUND
from tests.support.devrun import (
    ADDED_STDIN,
    READY_LINE,
    DevRun,
    base_env,
    ctrl_c,
    descendants,
    ivr_vault,
    vault_env,
)


def test_make_run_then_the_operator_cli_from_another_terminal(
    start_dev: Callable[..., DevRun],
) -> None:
    run = start_dev()
    run.wait_for(READY_LINE)
    out = run.output()
    backend_port = run.env["BACKEND_PORT"]

    # The first lines: the real listeners and processes, not ***.*.*.*:****.
    services = [
        pid
        for pid, argv in descendants(run.process.pid).items()
        if [a for a in argv if a][-2:] in (["serve", "webhook"], ["serve", "backend"])
    ]
    assert len(services) == 2, descendants(run.process.pid)
    for pid in services:
        assert f"Started server process [{pid}]" in out
    for port in (run.webhook_port, backend_port):
        assert f"Uvicorn running on http://127.0.0.1:{port} (Press CTRL+C to quit)" in out
    assert "type=aes256-gcm96" in out and "keys=3 roles=4" in out
    assert "ttl_s=3600.0" in out

    addr = vault_env(run)["VAULT_ADDR"]
    using = f"ivr-vault: using the dev Vault at {addr} (.dev/vault.env)"

    status = ivr_vault(run, "keys", "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("ivr-dtmf  latest v1  min_decryption_version 1")
    assert status.stderr == f"{using}, as ivr-keyadmin (.dev/ivr-keyadmin/)\n"  # quiet

    verbose = ivr_vault(run, "keys", "status", "--json", "-v")
    logged = [json.loads(line) for line in verbose.stderr.splitlines()[1:]]
    assert [line["event"] for line in logged] == ["vault login"]
    assert logged[0]["ttl_s"] == 1800.0  # ivr-keyadmin's token_ttl, readable
    assert "ivr-dtmf" in json.loads(verbose.stdout)

    # -vv: the Vault client's request lines show method, path and status (not digits).
    debug = ivr_vault(run, "keys", "status", "--json", "-vv")
    assert debug.returncode == 0, debug.stderr
    requests = [
        json.loads(line)["event"]
        for line in debug.stderr.splitlines()[1:]
        if '"logger": "urllib3.connectionpool"' in line
    ]
    port = addr.rsplit(":", 1)[1]
    assert f'http://***.*.*.*:{port} "GET /v1/transit/keys/ivr-dtmf HTTP/1.1" 200 ' in "\n".join(
        requests
    ), requests

    # With VAULT_ADDR set (to anything but .dev/vault.env's own address: that one counts
    # as sourced), .dev/ is not read: no identity, one line, exit 2.
    elsewhere = ivr_vault(run, "keys", "status", VAULT_ADDR=addr.replace("127.0.0.1", "localhost"))
    assert elsewhere.returncode == 2
    assert elsewhere.stderr.startswith("ivr-vault: configuration error: VAULT_ROLE_ID")
    assert len(elsewhere.stderr.splitlines()) == 1 and "using" not in elsewhere.stderr

    added = ivr_vault(
        run, "accounts", "add", "--account", "AC55556666", "--balance", "7.00", stdin=ADDED_STDIN
    )
    assert added.returncode == 0, added.stderr
    said, *audit = added.stderr.splitlines()
    assert said == f"{using}, as ivr-backend (.dev/ivr-backend/)"
    # The audit line names the account by its letters-only reference, never the label.
    (line,) = (json.loads(text) for text in audit)
    assert line["event"] == "account added by an operator" and line["account_ref"].isalpha()
    assert "55556666" not in added.stderr

    # An error the service raises: one line, no traceback, naming the node and the status.
    refused = ivr_vault(run, "keys", "status", VAULT_ADDR=addr, VAULT_TOKEN="not-a-token")
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1] == (
        f"ivr-vault: VaultPermissionDenied: token lookup: permission denied (HTTP 403 from {addr})"
    )
    # A key that does not exist: bad input, exit 2 (not Vault's 403 for it).
    nosuch = ivr_vault(run, "keys", "rotate", "--key", "ivr-nosuch")
    assert (nosuch.returncode, nosuch.stderr.splitlines()[1:]) == (
        2,
        [
            "ivr-vault: bad input: --key ivr-nosuch: no such Transit key (keys under transit/: "
            "ivr-backup-sign, ivr-dtmf, ivr-lookup)"
        ],
    )

    doctor = ivr_vault(
        run,
        "doctor",
        WEBHOOK_PORT=str(run.webhook_port),
        BACKEND_URL=f"http://127.0.0.1:{backend_port}",
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert doctor.stdout.splitlines()[-1] == "all checks passed"
    assert "logs in (make run .dev/ivr-keyadmin/)" in doctor.stdout
    assert doctor.stderr == f"{using}\n"


def test_nothing_needs_sourcing_and_a_sourced_shell_is_no_trap(
    start_dev: Callable[..., DevRun],
) -> None:
    """The banner shows the bao CLI with the address inline and the token read from its
    file (it works as printed); a shell that sourced .dev/vault.env runs each operator
    command as that command's own identity, not as root; and after Ctrl-C, make run from
    that shell starts the same Vault again, at the same address."""
    run = start_dev()
    run.wait_for(READY_LINE)
    addr = vault_env(run)["VAULT_ADDR"]
    bao_line = next(
        line.strip() for line in run.output().splitlines() if ".venv/bin/bao status" in line
    )
    assert bao_line == f"VAULT_ADDR={addr} VAULT_TOKEN=$(cat .dev/root-token) .venv/bin/bao status"
    token_file = run.state / "root-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().strip() == vault_env(run)["VAULT_TOKEN"]
    venv_bin = Path(sys.executable).parent
    status = subprocess.run(
        ["bash", "-c", bao_line.replace(".venv/bin/", f"{venv_bin}/")],
        cwd=run.cwd,
        env=base_env(run.cwd),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert status.returncode == 0 and "Sealed" in status.stdout, status.stderr

    sourced = vault_env(run)  # what `source .dev/vault.env` leaves in a shell
    keys = ivr_vault(run, "keys", "status", "--json", "-v", **sourced)
    assert keys.returncode == 0, keys.stderr
    said = keys.stderr.splitlines()
    assert said[0] == (
        "ivr-vault: VAULT_ADDR, VAULT_TOKEN, BAO_ADDR, BAO_TOKEN come from "
        ".dev/vault.env (sourced earlier): not used; nothing needs sourcing"
    )
    assert said[1].endswith("as ivr-keyadmin (.dev/ivr-keyadmin/)")
    assert json.loads(said[2])["ttl_s"] == 1800.0  # the key-admin's token, not root's (0)

    assert ctrl_c(run) == 0
    again = start_dev(**sourced)
    again.wait_for(READY_LINE)
    assert "come from .dev/vault.env (sourced earlier)" in again.output()
    assert vault_env(again)["VAULT_ADDR"] == addr  # the shell's address is right again


def test_doctor_and_call_find_the_stack_running_here(start_dev: Callable[..., DevRun]) -> None:
    """docs/security.md, "smaller items": doctor probed the default ports (8080) whatever ran here;
    a second
    ``make run`` on WEBHOOK_PORT=28080 got ✓ for another stack. ``make run`` writes
    ``.dev/cluster.json`` (make run-ha's format); doctor and call, with nothing set and no
    URL given, take the stack from it, and without it say they cannot tell."""
    run = start_dev()  # its own free ports, never 8080
    run.wait_for(READY_LINE)
    processes = json.loads((run.state / "cluster.json").read_text())["processes"]
    backend = f"http://127.0.0.1:{run.env['BACKEND_PORT']}"
    assert {p["role"]: p["url"] for p in processes} == {
        "vault": vault_env(run)["VAULT_ADDR"],
        "backend": backend,
        "webhook": f"http://127.0.0.1:{run.webhook_port}",
    }
    assert all(isinstance(p["pid"], int) for p in processes)

    called = ivr_vault(run, "call", "--card", "1234", "--pin", "4321")  # no --url
    assert called.returncode == 0 and called.stdout.splitlines()[-1] == FOUND, called.stderr
    doctor = ivr_vault(run, "doctor")
    assert doctor.returncode == 0, doctor.stdout
    assert f"http://127.0.0.1:{run.webhook_port}/readyz: ready" in doctor.stdout
    assert f"{backend}/readyz: ready" in doctor.stdout

    assert ctrl_c(run) == 0
    assert not (run.state / "cluster.json").exists()
    called = ivr_vault(run, "call", "--card", "1234", "--pin", "4321")
    assert (called.returncode, called.stderr) == (
        2,
        (
            "ivr-vault: configuration error: cannot tell which webhook runs here: .dev/ has no "
            "cluster.json (is `make run` running in this directory?); or give --url\n"
        ),
    )
    doctor = ivr_vault(run, "doctor")
    assert any(
        line.startswith("✗ services ")
        and line.endswith(
            "cannot tell which stack runs here: .dev/ has no cluster.json (is `make run` "
            "running in this directory?)"
        )
        for line in doctor.stdout.splitlines()
    ), doctor.stdout
    assert "/readyz" not in doctor.stdout  # no other stack's ports probed
