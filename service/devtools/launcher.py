"""``make run``: the whole service on one machine, with a local dev Vault.

Starts (or reuses, with ``VAULT_ADDR``) a Vault, bootstraps it, seeds the demo account,
starts backend and webhook as separate processes each logged in with its own AppRole,
prints how to call it, and on Ctrl-C stops everything it started.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import sys
import time
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

import structlog

from service.backend.enrolment import DEMO_ACCOUNT, DEMO_CARD, DEMO_PIN, add_account
from service.devtools.devstack import DevVault, ServiceProcess, wait_http
from service.errors import ConfigError
from service.settings import Settings
from service.vault.bootstrap import bootstrap, issue_credentials
from service.vault.client import VaultClient

log = structlog.get_logger("ivr.dev")


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def _secret_file(path: Path, from_env: str | None) -> Path:
    """Use the value from the environment when given, else keep (or make) a dev one."""
    if from_env:
        _write_private(path, from_env + "\n")
    elif not path.exists():
        _write_private(path, secrets.token_urlsafe(32) + "\n")
    return path


def _lock(state_dir: Path, stack: ExitStack) -> None:
    handle = stack.enter_context((state_dir / "run.lock").open("a+"))
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        raise ConfigError(f"make run: already running in this directory (pid {holder}); "
                          "stop it with Ctrl-C first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT both unwind the launcher, stopping what it started."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Python leaves SIGINT ignored when it was ignored at start (a shell's `... &`): the
    # services would still stop on Ctrl-C, and this launcher would not notice.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def dev_output_env(environ: Mapping[str, str]) -> dict[str, str]:
    """How the services show their logs under ``make run``: console lines, straight to the
    terminal. (The bench measures the services this way too: bench/RESULTS.md.)"""
    return {"LOG_FORMAT": environ.get("LOG_FORMAT", "console"), "PYTHONUNBUFFERED": "1"}


def run_dev(settings: Settings, environ: Mapping[str, str], *, state_dir: Path) -> int:
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    with ExitStack() as stack:
        _lock(state_dir, stack)
        _stop_on_signals()

        if environ.get("VAULT_ADDR") and environ.get("VAULT_TOKEN"):
            vault_addr, root = settings.vault_addr, settings.vault_token
            assert root is not None
            print(f"Using the Vault at {vault_addr} (VAULT_ADDR).")
        else:
            dev_vault = DevVault.start(state_dir, port=_vault_port(environ))
            stack.callback(dev_vault.stop)
            vault_addr, root = dev_vault.addr, dev_vault.root_token
            env_lines = "".join(f"export {k}={v}\n" for k, v in dev_vault.env().items())
            _write_private(state_dir / "vault.env", env_lines)
            print(f"Dev Vault (OpenBao) at {vault_addr}; audit log {dev_vault.audit_log}")

        admin = VaultClient(vault_addr, root, timeout=10)
        layout = bootstrap(admin)
        creds = issue_credentials(admin, ["ivr-webhook", "ivr-backend", "ivr-keyadmin"],
                                  approle_mount=layout.approle_mount)
        for role, c in creds.items():
            c.write(state_dir / role)

        twilio_file = _secret_file(state_dir / "twilio-auth-token",
                                   environ.get("TWILIO_AUTH_TOKEN"))
        backend_file = _secret_file(state_dir / "backend-token", environ.get("BACKEND_TOKEN"))
        store_path = state_dir / "accounts.sqlite3"
        public_base_url, backend_url = _local_urls(settings, environ)

        def service_env(role: str) -> dict[str, str]:
            env = {k: v for k, v in environ.items()
                   if k not in ("VAULT_TOKEN", "BAO_TOKEN", "TWILIO_AUTH_TOKEN",
                                "BACKEND_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID")}
            env.update({
                "VAULT_ADDR": vault_addr,
                "VAULT_ROLE_ID_FILE": str(state_dir / f"ivr-{role}" / "role_id"),
                "VAULT_SECRET_ID_FILE": str(state_dir / f"ivr-{role}" / "secret_id"),
                "BACKEND_TOKEN_FILE": str(backend_file),
                "STORE_PATH": str(store_path),
                **dev_output_env(environ),
                "PUBLIC_BASE_URL": public_base_url,
                "BACKEND_URL": backend_url,
            })
            if role == "webhook":
                env["TWILIO_AUTH_TOKEN_FILE"] = str(twilio_file)
            return env

        backend_settings = Settings.from_environ(service_env("backend"))
        add_account(backend_settings, account=DEMO_ACCOUNT[0], balance=DEMO_ACCOUNT[1],
                    last4=DEMO_CARD, pin=DEMO_PIN)

        backend = ServiceProcess("backend", settings.backend_port, service_env("backend"),
                                 state_dir)
        webhook = ServiceProcess("webhook", settings.webhook_port, service_env("webhook"),
                                 state_dir)
        stack.callback(backend.stop)
        backend.start(to_terminal=True)
        stack.callback(webhook.stop)
        webhook.start(to_terminal=True)
        wait_http(f"{webhook.url}/readyz", timeout=15)
        call = ".venv/bin/ivr-vault call --card 1234 --pin 4321"
        if public_base_url != "http://127.0.0.1:8080":
            call += f" --url {public_base_url or webhook.url}"  # call's own default is 8080

        print(f"""
ivr-vault is running.
  webhook  {webhook.url}   (Twilio voice URL: {public_base_url or "<proxy's URL>"}/voice)
  backend  {backend.url}   (internal)
  vault    {vault_addr}    (source {state_dir}/vault.env to use the vault/bao CLI)

Place a test call:
  {call}
Ctrl-C stops everything.
""", flush=True)
        try:
            while all(p.process is not None and p.process.poll() is None
                      for p in (backend, webhook)):
                time.sleep(0.5)
            print("ivr-vault: a service exited; stopping.", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nivr-vault: stopping.", flush=True)
            return 0


def _local_urls(settings: Settings, environ: Mapping[str, str]) -> tuple[str, str]:
    """PUBLIC_BASE_URL and BACKEND_URL, which unless set follow WEBHOOK_PORT and
    BACKEND_PORT: signatures are checked against the former, the webhook calls the latter,
    so a stack moved off 8080/8081 must not keep pointing there."""
    public = (settings.public_base_url if "PUBLIC_BASE_URL" in environ
              else f"http://127.0.0.1:{settings.webhook_port}")
    backend = (settings.backend_url if "BACKEND_URL" in environ
               else f"http://127.0.0.1:{settings.backend_port}")
    return public, backend


def _vault_port(environ: Mapping[str, str]) -> int | None:
    raw = environ.get("DEV_VAULT_PORT")
    return int(raw) if raw and raw.isdigit() else None
