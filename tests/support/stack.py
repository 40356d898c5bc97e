"""A running backend + webhook pair against a real OpenBao, and AppRole clients on it.

Nothing here is mocked: the services start as ``python -m service serve ...`` processes,
exactly as the dev launcher starts them, each reading only its own credentials.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.backend.enrolment import seed_demo
from service.devtools.devstack import DevVault, ServiceProcess, free_port
from service.settings import Secret, Settings
from service.vault.bootstrap import RoleCredentials
from service.vault.client import AppRoleCredentials, VaultClient

ROLES = ("ivr-webhook", "ivr-backend", "ivr-keyadmin")


def role_client(dev_vault: DevVault, creds: RoleCredentials, **kwargs: object) -> VaultClient:
    return VaultClient(
        dev_vault.addr,
        AppRoleCredentials(Secret(creds.role_id), Secret(creds.secret_id)),
        timeout=5,
        **kwargs,  # type: ignore[arg-type]
    )


@dataclass
class Stack:
    """A running backend + webhook pair against the session Vault."""

    dir: Path
    vault: DevVault
    twilio_token: str
    backend_token: str
    backend: ServiceProcess
    webhook: ServiceProcess
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def store_path(self) -> Path:
        return self.dir / "accounts.sqlite3"

    def backend_settings(self) -> Settings:
        return Settings.from_environ(self.backend.env)

    def stop(self) -> None:
        self.webhook.stop()
        self.backend.stop()


def make_stack(
    dev_vault: DevVault,
    credentials: dict[str, RoleCredentials],
    directory: Path,
    *,
    webhook_env: dict[str, str] | None = None,
    backend_env: dict[str, str] | None = None,
    start: bool = True,
) -> Stack:
    """Write credentials where each service (and only it) can read them, seed the demo
    account with the backend's identity, and start both processes."""
    twilio_token = secrets.token_urlsafe(24)
    backend_token = secrets.token_urlsafe(24)
    for role in ("ivr-webhook", "ivr-backend"):
        credentials[role].write(directory / role)
    (directory / "twilio").write_text(twilio_token)
    (directory / "backend-token").write_text(backend_token)
    backend_port, webhook_port = free_port(), free_port()
    base = {
        "PATH": os.environ.get("PATH", ""),
        "VAULT_ADDR": dev_vault.addr,
        "BACKEND_TOKEN_FILE": str(directory / "backend-token"),
        "STORE_PATH": str(directory / "accounts.sqlite3"),
        "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        "HOME": str(directory),
    }

    def env_for(role: str, extra: dict[str, str] | None) -> dict[str, str]:
        env = dict(base)
        env["VAULT_ROLE_ID_FILE"] = str(directory / f"ivr-{role}" / "role_id")
        env["VAULT_SECRET_ID_FILE"] = str(directory / f"ivr-{role}" / "secret_id")
        return {**env, **(extra or {})}

    b_env = env_for("backend", {"BACKEND_PORT": str(backend_port), **(backend_env or {})})
    w_env = env_for(
        "webhook",
        {
            "WEBHOOK_PORT": str(webhook_port),
            "BACKEND_URL": f"http://127.0.0.1:{backend_port}",
            "TWILIO_AUTH_TOKEN_FILE": str(directory / "twilio"),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{webhook_port}",
            **(webhook_env or {}),
        },
    )
    seed_demo(Settings.from_environ(b_env))
    stack = Stack(
        directory,
        dev_vault,
        twilio_token,
        backend_token,
        ServiceProcess("backend", backend_port, b_env, directory),
        ServiceProcess("webhook", webhook_port, w_env, directory),
    )
    if start:
        stack.backend.start()
        stack.webhook.start()
    return stack


class Stacks:
    """:func:`make_stack` as a fixture factory (tests/integration/conftest.py: ``new_stack``
    for one test, ``module_stack`` for a module): each stack it starts, on the session's
    Vault in a directory of its own, is stopped by :meth:`stop_all` at the fixture's end."""

    def __init__(
        self,
        dev_vault: DevVault,
        credentials: dict[str, RoleCredentials],
        mkdir: Callable[[str], Path],
    ) -> None:
        self._vault, self._credentials, self._mkdir = dev_vault, credentials, mkdir
        self._started: list[Stack] = []

    def __call__(self, name: str, *, directory: Path | None = None, **kwargs: Any) -> Stack:
        """``kwargs``: :func:`make_stack`'s (``webhook_env``, ``backend_env``, ``start``)."""
        stack = make_stack(self._vault, self._credentials, directory or self._mkdir(name), **kwargs)
        self._started.append(stack)
        return stack

    def stop_all(self) -> None:
        while self._started:
            self._started.pop().stop()


def cli_call(stack: Stack, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`ivr-vault call ARGS` against ``stack``'s webhook, run in ``cwd`` as an operator would."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(cwd),
        "TWILIO_AUTH_TOKEN": stack.twilio_token,
    }
    return subprocess.run(
        [sys.executable, "-m", "service", "call", *args, "--url", stack.webhook.url],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
