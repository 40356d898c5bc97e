"""A planted ``.dev/`` never receives an operator's credentials (docs/security.md, "a planted
.dev/"), with the real
``ivr-vault`` command and a real listener standing in for the attacker's "Vault".

The review's attack: with ``VAULT_ADDR`` unset, the CLI took the address from
``./.dev/vault.env`` and kept ``VAULT_TOKEN`` or ``VAULT_ROLE_ID``/``VAULT_SECRET_ID`` from
the environment; a ``vault.env`` naming ``http://127.0.0.1:18999`` received
``lookup-self`` with the operator's token and an AppRole login with the real IDs. And a
``.dev/`` that is not the operator's alone offered its own identities to its own address.
The positive case (``make run``'s own ``.dev/``, nothing set: it keeps working) is
tests/integration/deploy/test_operator_cli.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from service.devtools.devstack import free_port

TOKEN, ROLE_ID, SECRET_ID = "hvs.operator-token-31337", "operator-role-id", "operator-secret-id"


class Listener:
    """The attacker's address: every request it gets, whole (headers and body)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode(errors="replace")
                seen.append(f"{self.command} {self.path}\n{self.headers}\n{body}")
                self.send_response(403)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"errors":["permission denied"]}')

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.addr = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def listener() -> Iterator[Listener]:
    running = Listener()
    yield running
    running.server.shutdown()
    running.server.server_close()


def plant(cwd: Path, addr: str) -> Path:
    """A ``.dev/`` as ``make run`` writes it, naming ``addr``, with a key-admin identity."""
    dev = cwd / ".dev"
    (dev / "ivr-keyadmin").mkdir(parents=True, mode=0o700)
    dev.chmod(0o700)
    (dev / "vault.env").write_text(
        f"# DEV ONLY\nexport VAULT_ADDR={addr}\nexport VAULT_TOKEN=planted-root\n"
    )
    (dev / "vault.env").chmod(0o600)
    (dev / "ivr-keyadmin" / "role_id").write_text("planted-role\n")
    (dev / "ivr-keyadmin" / "secret_id").write_text("planted-secret\n")
    return dev


def keys_status(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "keys", "status"],
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "given",
    [
        {"VAULT_TOKEN": TOKEN},
        {"VAULT_ROLE_ID": ROLE_ID, "VAULT_SECRET_ID": SECRET_ID},
    ],
    ids=["token", "approle"],
)
def test_credentials_from_the_environment_never_reach_a_dev_address(
    tmp_path: Path, listener: Listener, given: dict[str, str]
) -> None:
    plant(tmp_path, listener.addr)
    done = keys_status(tmp_path, **given)
    assert listener.seen == []
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(
        "ivr-vault: configuration error: VAULT_ADDR is not set, and the environment names "
        f"credentials ({', '.join(given)})"
    )
    assert not any(value in done.stderr + done.stdout for value in given.values())


@pytest.mark.parametrize("how", ["others may write", "another user's"])
def test_a_dev_dir_not_ours_alone_is_not_used(tmp_path: Path, listener: Listener, how: str) -> None:
    """Nothing in the environment: ``.dev/``'s own identity would be offered to its own
    address, and the command's answers (or an ``accounts add``'s digits, for HMAC) would
    come from there. Not when ``.dev/`` is writable by others or belongs to another."""
    dev = plant(tmp_path, listener.addr)
    if how == "others may write":
        dev.chmod(0o777)
    else:
        if os.geteuid() != 0:
            pytest.skip("giving a directory to another user takes root")
        for path in (dev, *dev.rglob("*")):
            os.chown(path, 65534, 65534)
    done = keys_status(tmp_path)
    assert listener.seen == []
    why = {
        "others may write": "others may write to it (mode 0777)",
        "another user's": "it belongs to uid 65534, not to this user (0)",
    }[how]
    assert f"ivr-vault: .dev/ not used: {why}\n" in done.stderr
    assert "planted" not in done.stderr + done.stdout


def test_call_takes_no_twilio_token_from_a_dev_dir_others_may_write(tmp_path: Path) -> None:
    dev = tmp_path / ".dev"
    dev.mkdir(mode=0o777)
    dev.chmod(0o777)
    (dev / "twilio-auth-token").write_text("planted-token\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "call",
            "--card",
            "1234",
            "--pin",
            "4321",
            "--url",
            "http://127.0.0.1:9",
        ],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (
        2,
        (
            "ivr-vault: configuration error: TWILIO_AUTH_TOKEN: not set, and .dev/ is not "
            "used: others may write to it (mode 0777)\n"
        ),
    )
