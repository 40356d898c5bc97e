"""Shared fixtures: a real OpenBao dev server, bootstrapped, and real service processes.

Nothing here is mocked: the session starts ``bao server -dev`` on a free port (with the
file audit device), runs the same bootstrap as ``make run``, and starts the services as
``python -m service serve ...`` processes, exactly as the dev launcher does.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog

from service.backend.enrolment import DEMO_ACCOUNT, DEMO_CARD, DEMO_PIN, add_account
from service.devtools.devstack import DevVault, ServiceProcess, free_port
from service.logs.config import LIBRARY_LOGGERS, configure_logging
from service.settings import Settings
from service.vault.bootstrap import Layout, RoleCredentials, bootstrap, issue_credentials
from service.vault.client import VaultClient

ROLES = ("ivr-webhook", "ivr-backend", "ivr-keyadmin")


@pytest.fixture(scope="session")
def dev_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevVault]:
    vault = DevVault.start(tmp_path_factory.mktemp("vault"))
    yield vault
    vault.stop()


@pytest.fixture(scope="session")
def admin(dev_vault: DevVault) -> VaultClient:
    return VaultClient(dev_vault.addr, dev_vault.root_token, timeout=10)


@pytest.fixture(scope="session")
def layout(admin: VaultClient) -> Layout:
    return bootstrap(admin)


@pytest.fixture(scope="session")
def credentials(admin: VaultClient, layout: Layout) -> dict[str, RoleCredentials]:
    return issue_credentials(admin, ROLES)


def role_client(dev_vault: DevVault, creds: RoleCredentials, **kwargs: object) -> VaultClient:
    from service.settings import Secret
    from service.vault.client import AppRoleCredentials

    return VaultClient(dev_vault.addr,
                       AppRoleCredentials(Secret(creds.role_id), Secret(creds.secret_id)),
                       timeout=5, **kwargs)  # type: ignore[arg-type]


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


def make_stack(dev_vault: DevVault, credentials: dict[str, RoleCredentials], directory: Path,
               *, webhook_env: dict[str, str] | None = None,
               backend_env: dict[str, str] | None = None, start: bool = True) -> Stack:
    """Write credentials where each service (and only it) can read them, seed the demo
    account with the backend's identity, and start both processes."""
    twilio_token = secrets.token_urlsafe(24)
    backend_token = secrets.token_urlsafe(24)
    for role in ("ivr-webhook", "ivr-backend"):
        credentials[role].write(directory / role)
    (directory / "twilio").write_text(twilio_token)
    (directory / "backend-token").write_text(backend_token)
    backend_port, webhook_port = free_port(), free_port()
    base = {"PATH": os.environ.get("PATH", ""), "VAULT_ADDR": dev_vault.addr,
            "BACKEND_TOKEN_FILE": str(directory / "backend-token"),
            "STORE_PATH": str(directory / "accounts.sqlite3"), "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1", "HOME": str(directory)}

    def env_for(role: str, extra: dict[str, str] | None) -> dict[str, str]:
        env = dict(base)
        env["VAULT_ROLE_ID_FILE"] = str(directory / f"ivr-{role}" / "role_id")
        env["VAULT_SECRET_ID_FILE"] = str(directory / f"ivr-{role}" / "secret_id")
        return {**env, **(extra or {})}

    b_env = env_for("backend", {"BACKEND_PORT": str(backend_port), **(backend_env or {})})
    w_env = env_for("webhook", {
        "WEBHOOK_PORT": str(webhook_port),
        "BACKEND_URL": f"http://127.0.0.1:{backend_port}",
        "TWILIO_AUTH_TOKEN_FILE": str(directory / "twilio"),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{webhook_port}",
        **(webhook_env or {}),
    })
    add_account(Settings.from_environ(b_env), account=DEMO_ACCOUNT[0], balance=DEMO_ACCOUNT[1],
                last4=DEMO_CARD, pin=DEMO_PIN)
    stack = Stack(directory, dev_vault, twilio_token, backend_token,
                  ServiceProcess("backend", backend_port, b_env, directory),
                  ServiceProcess("webhook", webhook_port, w_env, directory))
    if start:
        stack.backend.start()
        stack.webhook.start()
    return stack


@pytest.fixture(scope="session")
def stack(dev_vault: DevVault, credentials: dict[str, RoleCredentials],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = make_stack(dev_vault, credentials, tmp_path_factory.mktemp("stack"))
    yield running
    running.stop()


# -- the log pipeline, in-process ------------------------------------------------------

LoggerState = tuple[list[logging.Handler], bool, int, bool]


@pytest.fixture
def pipeline() -> Iterator[io.StringIO]:
    """configure_logging(stream=StringIO) and put every global it touches back afterwards."""
    loggers = [logging.getLogger(n) for n in LIBRARY_LOGGERS] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    saved: dict[logging.Logger, LoggerState] = {
        lg: (list(lg.handlers), lg.propagate, lg.level, lg.disabled) for lg in [*loggers]
    }
    root = logging.getLogger()
    root_state = (list(root.handlers), root.level)
    globals_ = (logging.lastResort, logging.raiseExceptions)
    hooks = (sys.excepthook, threading.excepthook, sys.unraisablehook)
    structlog_config = structlog.get_config()
    stream = io.StringIO()
    configure_logging(stream=stream)
    try:
        yield stream
    finally:
        logging.captureWarnings(False)
        structlog.configure(**structlog_config)
        sys.excepthook, threading.excepthook, sys.unraisablehook = hooks
        logging.lastResort, logging.raiseExceptions = globals_
        root.handlers[:] = root_state[0]
        root.setLevel(root_state[1])
        for lg, (handlers, propagate, level, disabled) in saved.items():
            lg.handlers[:] = handlers
            lg.propagate, lg.level, lg.disabled = propagate, level, disabled
