"""The operator's side of ``make run``, as a person meets it: the first lines show the real
ports and PIDs, and from another terminal (a clean environment, the same directory)
``ivr-vault keys status``, ``accounts add`` and ``doctor`` find the dev Vault and the right
identity, say which in one line, log nothing else unless asked (-v), and fail in one line."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.support.devrun import (
    ADDED_STDIN,
    READY_LINE,
    DevRun,
    descendants,
    ivr_vault,
    vault_env,
)


def test_make_run_then_the_operator_cli_from_another_terminal(
        start_dev: Callable[..., DevRun]) -> None:
    run = start_dev()
    run.wait_for(READY_LINE)
    out = run.output()
    backend_port = run.env["BACKEND_PORT"]

    # The first lines: the real listeners and processes, not ***.*.*.*:****.
    services = [pid for pid, argv in descendants(run.process.pid).items()
                if [a for a in argv if a][-2:] in (["serve", "webhook"], ["serve", "backend"])]
    assert len(services) == 2, descendants(run.process.pid)
    for pid in services:
        assert f"Started server process [{pid}]" in out
    for port in (run.webhook_port, backend_port):
        assert f"Uvicorn running on http://127.0.0.1:{port} (Press CTRL+C to quit)" in out
    assert "type=aes256-gcm96" in out and "keys=2 roles=4" in out
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

    # With VAULT_ADDR set, .dev/ is not read: no identity, one line, exit 2.
    elsewhere = ivr_vault(run, "keys", "status", VAULT_ADDR=addr)
    assert elsewhere.returncode == 2
    assert elsewhere.stderr.startswith("ivr-vault: configuration error: VAULT_ROLE_ID")
    assert len(elsewhere.stderr.splitlines()) == 1 and "using" not in elsewhere.stderr

    added = ivr_vault(run, "accounts", "add", "--account", "AC55556666", "--balance", "7.00",
                      stdin=ADDED_STDIN)
    assert added.returncode == 0, added.stderr
    assert added.stderr == f"{using}, as ivr-backend (.dev/ivr-backend/)\n"

    # An error the service raises: one line, no traceback.
    refused = ivr_vault(run, "keys", "rotate", "--key", "ivr-nosuch")
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[1:] == [
        "ivr-vault: VaultPermissionDenied: rotate key: permission denied"]

    doctor = ivr_vault(run, "doctor", WEBHOOK_PORT=str(run.webhook_port),
                       BACKEND_URL=f"http://127.0.0.1:{backend_port}")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert doctor.stdout.splitlines()[-1] == "all checks passed"
    assert "logs in (make run .dev/ivr-keyadmin/)" in doctor.stdout
    assert doctor.stderr == f"{using}\n"
