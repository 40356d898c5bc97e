"""``make run``: the whole service on one machine, with a local dev Vault.

Starts (or reuses, with ``VAULT_ADDR``) a Vault, bootstraps it, seeds the demo account
unless the store has it, starts backend and webhook as separate processes each logged in
with its own AppRole, prints how to call it, and on Ctrl-C stops everything it started.

The dev Vault keeps its data in ``.dev/`` (server mode, Raft), so a second ``make run``
finds the keys, AppRoles and accounts of the first. If the backend finds that the Vault
cannot reproduce the store's ``ivr-lookup`` canary (another Vault, or its data lost), it
says so in one error line and never becomes ready; ``make run`` then stops, exit 1.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

import httpx
import structlog

from service.backend.enrolment import seed_demo
from service.cluster import cluster_member, forget_cluster_json, write_cluster_json
from service.devtools.devstack import DevVault, ServiceProcess, wait_http
from service.errors import ConfigError, VaultError
from service.files import write_private
from service.settings import Settings
from service.store.migrations import migrate_store
from service.vault.bootstrap import bootstrap, issue_credentials
from service.vault.client import VaultClient

log = structlog.get_logger("ivr.dev")

READY_TIMEOUT_S = 30.0
# Beside vault.env: the dev root token alone (dev only). A file's name, not a secret.
ROOT_TOKEN_FILE = "root-token"  # noqa: S105


def write_vault_env(
    path: Path, addr: str, token: str, extra: Mapping[str, str] | None = None
) -> None:
    """``.dev/vault.env``, which ``ivr-vault`` reads (nothing needs it sourced), and beside
    it ``root-token`` (:data:`ROOT_TOKEN_FILE`), the token alone for the bao CLI.

    Format: lines ``export NAME=VALUE`` (values have no spaces and no quotes), for
    ``VAULT_ADDR`` (``make run-ha``: its three nodes, comma-separated), ``VAULT_TOKEN``,
    ``BAO_ADDR`` and ``BAO_TOKEN`` (the bao CLI takes one address: the first node), then
    ``extra`` (``make run-ha``: where the account store is); lines starting with ``#`` are
    comments. Mode 0600: the token is the dev Vault's root token (dev only).
    """
    lines = [
        "# DEV ONLY: the make-run Vault and its root token. Nothing needs it sourced:\n"
        "# ivr-vault commands find it; the bao CLI: VAULT_TOKEN=$(cat root-token).\n"
    ]
    for prefix, value in (("VAULT", addr), ("BAO", addr.split(",", maxsplit=1)[0])):
        lines += [f"export {prefix}_ADDR={value}\n", f"export {prefix}_TOKEN={token}\n"]
    lines += [f"export {name}={value}\n" for name, value in (extra or {}).items()]
    write_private(path, "".join(lines))
    # The token alone, for `VAULT_TOKEN=$(cat .dev/root-token)`: never in a terminal.
    write_private(path.with_name(ROOT_TOKEN_FILE), token + "\n")


def secret_file(path: Path, from_env: str | None) -> Path:
    """Use the value from the environment when given, else keep (or make) a dev one."""
    if from_env:
        write_private(path, from_env + "\n")
    elif not path.exists():
        write_private(path, secrets.token_urlsafe(32) + "\n")
    return path


def hold_lock(state_dir: Path, stack: ExitStack) -> None:
    """One ``make run`` or ``make run-ha`` per directory, held until ``stack`` closes."""
    handle = stack.enter_context((state_dir / "run.lock").open("a+"))
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        raise ConfigError(
            f"make run: already running in this directory (pid {holder}); stop it with Ctrl-C first"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()


def running_pid(state_dir: Path) -> str | None:
    """The PID of the ``make run`` (or ``make run-ha``) holding ``state_dir``'s lock, if
    one does: a command that would pull its Vault or store from under it asks first."""
    lock = state_dir / "run.lock"
    if not lock.is_file():
        return None
    with lock.open("r") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "?"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def stop_on_signals() -> None:
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


def listeners(settings: Settings, environ: Mapping[str, str]) -> list[tuple[str, str, int]]:
    """What ``make run`` will listen on: (the setting that moves it, host, port). The dev
    Vault's port is free by construction unless DEV_VAULT_PORT names one."""
    wanted = [
        ("WEBHOOK_PORT", settings.webhook_host, settings.webhook_port),
        ("BACKEND_PORT", settings.backend_host, settings.backend_port),
    ]
    vault_port = _vault_port(environ)
    if vault_port and not (environ.get("VAULT_ADDR") and environ.get("VAULT_TOKEN")):
        wanted.append(("DEV_VAULT_PORT", "127.0.0.1", vault_port))
    return wanted


def check_ports(wanted: list[tuple[str, str, int]]) -> None:
    """Before anything starts: each port must be free, or the error names it and the
    setting that moves it (instead of a service's bind error after the Vault started).
    SO_REUSEADDR as uvicorn binds, so a port that only has connections closing is free."""
    for setting, host, port in wanted:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise ConfigError(
                    f"port {port} on {host} is taken ({exc.strerror or exc}); set "
                    f"{setting} to another port, or stop what listens there"
                ) from None


def run_dev(  # noqa: PLR0915
    settings: Settings,
    environ: Mapping[str, str],
    *,
    state_dir: Path,
) -> int:
    # One sequence, start to stop, in the order a reader follows it (split, it read worse).
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    with ExitStack() as stack:
        hold_lock(state_dir, stack)
        check_ports(listeners(settings, environ))
        stop_on_signals()

        external = environ.get("VAULT_ADDR") if environ.get("VAULT_TOKEN") else None
        if external:
            vault_addr, root = ",".join(settings.vault_addr), settings.vault_token
            assert root is not None
            dev_process = None
            print(f"Using the Vault at {vault_addr} (VAULT_ADDR).")
        else:
            dev_vault = DevVault.start(state_dir, port=_vault_port(environ))
            stack.callback(dev_vault.stop)
            vault_addr, root = dev_vault.addr, dev_vault.root_token
            dev_process = dev_vault.process
            write_vault_env(state_dir / "vault.env", vault_addr, root.reveal())
            print(
                f"Dev Vault (OpenBao, server mode) at {vault_addr}; data in "
                f"{dev_vault.data_dir}, unseal key and root token (dev only) in "
                f"{dev_vault.keyring.path}; audit log {dev_vault.audit_log}"
            )

        admin = VaultClient(vault_addr.split(","), root, timeout=10)
        try:
            layout = bootstrap(admin)
        except VaultError as exc:
            if not external:
                raise
            print(
                f"ivr-vault: the Vault that VAULT_ADDR and VAULT_TOKEN name cannot be used "
                f"({type(exc).__name__}: {exc}); for make run's own Vault: unset "
                "VAULT_ADDR VAULT_TOKEN BAO_ADDR BAO_TOKEN",
                file=sys.stderr,
                flush=True,
            )
            return 1
        creds = issue_credentials(
            admin,
            ["ivr-webhook", "ivr-backend", "ivr-keyadmin", "ivr-backup"],
            approle_mount=layout.approle_mount,
        )
        for role, c in creds.items():
            c.write(state_dir / role)

        twilio_file = secret_file(state_dir / "twilio-auth-token", environ.get("TWILIO_AUTH_TOKEN"))
        backend_file = secret_file(state_dir / "backend-token", environ.get("BACKEND_TOKEN"))
        store_path = state_dir / "accounts.sqlite3"
        public_base_url, backend_url = _local_urls(settings, environ)

        def service_env(role: str) -> dict[str, str]:
            return service_environment(
                environ,
                role,
                vault_addr=vault_addr,
                approle_dir=state_dir,
                backend_token_file=backend_file,
                twilio_file=twilio_file,
                public_base_url=public_base_url,
                backend_url=backend_url,
                store={"STORE_PATH": str(store_path)},
            )

        prepare_store(Settings.from_environ(service_env("backend")))

        backend = ServiceProcess(
            "backend", settings.backend_port, service_env("backend"), state_dir
        )
        webhook = ServiceProcess(
            "webhook", settings.webhook_port, service_env("webhook"), state_dir
        )
        stack.callback(backend.stop)
        backend.start(to_terminal=True)
        stack.callback(webhook.stop)
        webhook.start(to_terminal=True)
        refused = wait_backend_ready(backend)
        if refused:
            print(
                f"ivr-vault: the backend is not ready: {refused} (its error line above "
                "says why and what to do); stopping.",
                file=sys.stderr,
                flush=True,
            )
            return 1
        wait_http(f"{webhook.url}/readyz", timeout=READY_TIMEOUT_S)
        # Which stack runs here, for doctor and call (another make run may use other ports).
        stack.callback(forget_cluster_json, state_dir)
        write_cluster_json(
            state_dir,
            [
                cluster_member("vault", "vault", dev_process, vault_addr),
                cluster_member("backend", "backend", backend.process, backend.url),
                cluster_member("webhook", "webhook", webhook.process, webhook.url),
            ],
        )
        try:  # a Ctrl-C the moment the block is printed is a clean stop too
            print(
                banner(
                    webhook.url,
                    backend.url,
                    vault_addr,
                    public_base_url,
                    root_token_file=None if external else state_dir / ROOT_TOKEN_FILE,
                ),
                flush=True,
            )
            while all(
                p.process is not None and p.process.poll() is None for p in (backend, webhook)
            ):
                time.sleep(0.5)
            print("ivr-vault: a service exited; stopping.", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nivr-vault: stopping.", flush=True)
            return 0


def banner(
    webhook: str,
    backend: str,
    vault_addr: str,
    public_base_url: str | None,
    *,
    root_token_file: Path | None,
) -> str:
    """What ``make run`` prints once everything answers. The bao line reads the root token
    from its file (``root_token_file``; None: a Vault of the operator's own, VAULT_ADDR),
    so that the token never lands in a terminal's scrollback."""
    call = ".venv/bin/ivr-vault call --card 1234 --pin 4321"
    if public_base_url and public_base_url != webhook:
        # What signatures are checked against; without it, call finds this stack in
        # .dev/cluster.json.
        call += f" --url {public_base_url}"
    addr = vault_addr.split(",", maxsplit=1)[0]
    bao = (
        f"VAULT_ADDR={addr} VAULT_TOKEN=$(cat {root_token_file}) .venv/bin/bao status"
        if root_token_file is not None
        else f"VAULT_ADDR={addr} .venv/bin/bao status   (with your own VAULT_TOKEN)"
    )
    return f"""
ivr-vault is running.
  webhook  {webhook}   (Twilio voice URL: {public_base_url or "<proxy's URL>"}/voice)
  backend  {backend}   (internal)
  vault    {vault_addr}

Place a test call:
  {call}
Operator commands need nothing sourced: in this directory each finds this Vault and runs
as its own identity (.venv/bin/ivr-vault keys status). The bao CLI, as root (dev only):
  {bao}
Ctrl-C stops everything.
"""


def prepare_store(settings: Settings) -> None:
    """The store's schema, then the demo account unless the store has it. (STORE_URL, when
    set, wins over the launcher's STORE_PATH: ``make run`` on a PostgreSQL store.)"""
    print(f"ivr-vault: {migrate_store(settings.store)}")
    print(f"ivr-vault: {seed_demo(settings)}")


# Secrets and identities a service must not inherit from the launcher's environment: each
# gets its own, from files.
_NOT_INHERITED = (
    "VAULT_TOKEN",
    "BAO_TOKEN",
    "TWILIO_AUTH_TOKEN",
    "BACKEND_TOKEN",
    "VAULT_ROLE_ID",
    "VAULT_SECRET_ID",
)


def service_environment(
    environ: Mapping[str, str],
    role: str,
    *,
    vault_addr: str,
    approle_dir: Path,
    backend_token_file: Path,
    twilio_file: Path,
    public_base_url: str,
    backend_url: str,
    store: Mapping[str, str],
) -> dict[str, str]:
    """The environment of one service process under ``make run`` or ``make run-ha``: the
    launcher's, without its secrets, plus this role's AppRole files (under
    ``approle_dir/ivr-ROLE``), the shared bearer token, where Vault, the store and (the
    webhook) the backend are, and the Twilio token for the webhook."""
    env = {k: v for k, v in environ.items() if k not in _NOT_INHERITED}
    env.update(
        {
            "VAULT_ADDR": vault_addr,
            "VAULT_ROLE_ID_FILE": str(approle_dir / f"ivr-{role}" / "role_id"),
            "VAULT_SECRET_ID_FILE": str(approle_dir / f"ivr-{role}" / "secret_id"),
            "BACKEND_TOKEN_FILE": str(backend_token_file),
            **store,
            **dev_output_env(environ),
            "PUBLIC_BASE_URL": public_base_url,
            "BACKEND_URL": backend_url,
        }
    )
    if role == "webhook":
        env["TWILIO_AUTH_TOKEN_FILE"] = str(twilio_file)
    return env


def wait_backend_ready(backend: ServiceProcess) -> str | None:
    """Wait for the backend's /readyz. None once it is ready; the name of the failed check
    when it will not become ready by waiting: its ``ivr-lookup`` check (the Vault cannot
    reproduce the store's canary). Vault being slow or away is waited for."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if backend.process is not None and backend.process.poll() is not None:
            return f"it exited with {backend.process.returncode}"
        try:
            answer = httpx.get(f"{backend.url}/readyz", timeout=5)
        except httpx.HTTPError:
            answer = None
        if answer is not None and answer.status_code == 200:
            return None
        if answer is not None and answer.status_code == 503:
            failed = [
                name
                for name, ok in answer.json().get("checks", {}).items()
                if ok is False and name != "vault"
            ]
            if failed:
                return ", ".join(failed)
        time.sleep(0.1)
    return f"no ready answer within {READY_TIMEOUT_S:.0f}s"


def _local_urls(settings: Settings, environ: Mapping[str, str]) -> tuple[str, str]:
    """PUBLIC_BASE_URL and BACKEND_URL, which unless set follow WEBHOOK_PORT and
    BACKEND_PORT: signatures are checked against the former, the webhook calls the latter,
    so a stack moved off 8080/8081 must not keep pointing there."""
    public = (
        settings.public_base_url
        if "PUBLIC_BASE_URL" in environ
        else f"http://127.0.0.1:{settings.webhook_port}"
    )
    backend = (
        ",".join(settings.backend_url)
        if "BACKEND_URL" in environ
        else f"http://127.0.0.1:{settings.backend_port}"
    )
    return public, backend


def _vault_port(environ: Mapping[str, str]) -> int | None:
    raw = environ.get("DEV_VAULT_PORT")
    return int(raw) if raw and raw.isdigit() else None
