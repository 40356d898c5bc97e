"""The operator's side of ``make run``, as a person meets it: the first lines show the real
ports and PIDs, and from another terminal (a clean environment, the same directory)
``ivr-vault keys status``, ``accounts add`` and ``doctor`` find the dev Vault and the right
identity, say which in one line, log nothing else unless asked (-v), and fail in one line."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.support.devrun import READY_LINE, DevRun, descendants, ivr_vault, vault_env


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

    # -vv: the Vault client's request lines show method, path and status (not digits).
    debug = ivr_vault(run, "keys", "status", "--json", "-vv")
    assert debug.returncode == 0, debug.stderr
    requests = [json.loads(line)["event"] for line in debug.stderr.splitlines()[1:]
                if '"logger": "urllib3.connectionpool"' in line]
    port = addr.rsplit(":", 1)[1]
    assert f'http://***.*.*.*:{port} "GET /v1/transit/keys/ivr-dtmf HTTP/1.1" 200 ' \
        in "\n".join(requests), requests

    # With VAULT_ADDR set, .dev/ is not read: no identity, one line, exit 2.
    elsewhere = ivr_vault(run, "keys", "status", VAULT_ADDR=addr)
    assert elsewhere.returncode == 2
    assert elsewhere.stderr.startswith("ivr-vault: configuration error: VAULT_ROLE_ID")
    assert len(elsewhere.stderr.splitlines()) == 1 and "using" not in elsewhere.stderr

    added = ivr_vault(run, "accounts", "add", "--account", "AC55556666", "--balance", "7.00",
                      stdin="5555\n7351\n")
    assert added.returncode == 0, added.stderr
    assert added.stderr == f"{using}, as ivr-backend (.dev/ivr-backend/)\n"

    # An error the service raises: one line, no traceback, naming the node and the status.
    refused = ivr_vault(run, "keys", "status", VAULT_ADDR=addr, VAULT_TOKEN="not-a-token")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"ivr-vault: VaultPermissionDenied: token lookup: permission denied (HTTP 403 from "
        f"{addr})"]
    # A key that does not exist: bad input, exit 2 (not Vault's 403 for it).
    nosuch = ivr_vault(run, "keys", "rotate", "--key", "ivr-nosuch")
    assert (nosuch.returncode, nosuch.stderr.splitlines()[1:]) == (2, [
        "ivr-vault: bad input: --key ivr-nosuch: no such Transit key (keys under transit/: "
        "ivr-dtmf, ivr-lookup)"])

    doctor = ivr_vault(run, "doctor", WEBHOOK_PORT=str(run.webhook_port),
                       BACKEND_URL=f"http://127.0.0.1:{backend_port}")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert doctor.stdout.splitlines()[-1] == "all checks passed"
    assert "logs in (make run .dev/ivr-keyadmin/)" in doctor.stdout
    assert doctor.stderr == f"{using}\n"
