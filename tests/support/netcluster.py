"""``make run-ha``'s topology with every piece on a host of its own
(tests/support/netns.py): 3 OpenBao Raft nodes, PostgreSQL, 2 backends, 2 webhooks and
Caddy, nine network namespaces on one bridge, each process reaching the others by their
host addresses only. The callers (the test's load) are this machine's root namespace,
reaching Caddy as Twilio would.

One host per process rather than three "machines": the drills cut single links (one
backend from PostgreSQL only, one webhook from the backends only), which needs each piece
at an address of its own; a machine is then a group of hosts cut off together
(:meth:`NetCluster.machine`: a Vault node, a backend and a webhook), which still talk to
each other, as on one machine.

Every process uses its service's usual port: each host has its own, so nothing collides
with the other users of this machine. The same pieces as make run-ha, started the same way
(the launcher's environment, bootstrap, Caddyfile.ha); only their addresses differ.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from service.backend.enrolment import seed_demo
from service.devtools.devstack import DevVault, dev_server_config, find_vault_binary
from service.devtools.launcher import service_environment
from service.devtools.postgres import USER, LocalPostgres
from service.devtools.proxy import find_caddy
from service.devtools.vault_cluster import DevVaultCluster
from service.settings import Secret, Settings
from service.store.migrations import migrate_store
from service.vault.bootstrap import bootstrap, issue_credentials, layout_dir
from tests.support.netns import SUBNET, Host, Network

VAULT_PORT, CLUSTER_PORT, PG_PORT = 8200, 8201, 5432
BACKEND_PORT, WEBHOOK_PORT, PROXY_PORT = 8081, 8080, 8080
READY_TIMEOUT_S = 60.0


class HostPostgres(LocalPostgres):
    """LocalPostgres on ``host``: listening on its address, the subnet allowed in."""

    def __init__(self, state_dir: Path, host: Host) -> None:
        super().__init__(state_dir, port=PG_PORT)
        self.host = host

    def url_for(self, database: str, user: str = USER) -> str:
        return (
            f"postgresql://{user}@{self.host.addr}:{self.port}/{database}"
            f"?passfile={self.passfile.resolve()}"
        )

    def _ensure_roles(self) -> None:
        super()._ensure_roles()
        # It writes the passfile for loopback; this server is reached at its host's address.
        self.passfile.write_text(self.passfile.read_text().replace("127.0.0.1", self.host.addr))

    def _spawn(self) -> subprocess.Popen[bytes]:
        hba = self.data_dir / "pg_hba.conf"
        line = f"host all all {SUBNET}.0/24 scram-sha-256\n"
        if line not in hba.read_text():
            with hba.open("a") as file:
                file.write(line)
        # initdb wrote the password file for loopback.
        self.passfile.write_text(self.passfile.read_text().replace("127.0.0.1", self.host.addr))
        as_user = (
            ["setpriv", f"--reuid={self._uid}", f"--regid={self._gid}", "--clear-groups"]
            if os.geteuid() == 0
            else []
        )
        log = self.log_path.open("ab")
        return self.host.popen(
            [
                *as_user,
                str(self._bindir / "postgres"),
                "-D",
                str(self.data_dir),
                "-c",
                f"listen_addresses={self.host.addr}",
                "-c",
                "unix_socket_directories=",
                "-p",
                str(self.port),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
        )


@dataclass
class Service:
    role: str
    host: Host
    port: int
    process: subprocess.Popen[Any] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host.addr}:{self.port}"

    @property
    def name(self) -> str:
        return self.host.name


@dataclass
class NetCluster:
    net: Network
    dir: Path
    vault: DevVaultCluster
    vault_hosts: list[Host]
    postgres: HostPostgres
    backends: list[Service]
    webhooks: list[Service]
    proxy: Service
    twilio_token: str
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def proxy_url(self) -> str:
        return self.proxy.url

    @property
    def store_url(self) -> str:
        return self.postgres.url

    def backend_settings(self) -> Settings:
        return Settings.from_environ(
            {
                "VAULT_ADDR": ",".join(self.vault.addrs),
                "STORE_URL": self.store_url,
                "VAULT_ROLE_ID_FILE": str(self.dir / "ivr-backend" / "role_id"),
                "VAULT_SECRET_ID_FILE": str(self.dir / "ivr-backend" / "secret_id"),
            }
        )

    def vault_host(self, node: DevVault) -> Host:
        return self.vault_hosts[self.vault.nodes.index(node)]

    def leader(self) -> tuple[DevVault, Host]:
        node = self.vault.leader()
        assert node is not None, "no Vault leader"
        return node, self.vault_host(node)

    def machine(self, index: int) -> list[Host]:
        """Machine ``index`` (1 or 2) of a three-machine deployment: its Vault node,
        backend and webhook (machine 3 holds the third Vault node; PostgreSQL and Caddy
        are with machine 1)."""
        return [
            self.vault_hosts[index - 1],
            self.backends[index - 1].host,
            self.webhooks[index - 1].host,
        ]


def start_cluster(net: Network, directory: Path) -> NetCluster:
    """Build the hosts and start every piece; each is killed when ``net`` closes."""
    vault_hosts = [net.host(f"vault-{i}") for i in (1, 2, 3)]
    pg_host = net.host("postgres")
    backend_hosts = [net.host(f"backend-{i}") for i in (1, 2)]
    webhook_hosts = [net.host(f"webhook-{i}") for i in (1, 2)]
    proxy_host = net.host("proxy")
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    vault = _start_vault(vault_hosts, directory / "vault", logs)
    admin = vault.admin()
    layout = bootstrap(admin)
    creds = issue_credentials(
        admin, ["ivr-webhook", "ivr-backend"], approle_mount=layout.approle_mount
    )
    admin.close()
    for role, c in creds.items():
        c.write(directory / role)

    os.chmod(directory, 0o711)  # the postgres user passes through to its data
    postgres = HostPostgres(directory / "pg", pg_host)
    postgres.start()

    twilio = secrets.token_urlsafe(24)
    (directory / "twilio").write_text(twilio)
    (directory / "backend-token").write_text(secrets.token_urlsafe(24))
    backends = [Service("backend", h, BACKEND_PORT) for h in backend_hosts]
    webhooks = [Service("webhook", h, WEBHOOK_PORT) for h in webhook_hosts]
    proxy = Service("proxy", proxy_host, PROXY_PORT)

    def env(service: Service) -> dict[str, str]:
        base = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(directory),
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
        values = service_environment(
            base,
            service.role,
            vault_addr=",".join(vault.addrs),
            approle_dir=directory,
            backend_token_file=directory / "backend-token",
            twilio_file=directory / "twilio",
            public_base_url=proxy.url,
            backend_url=",".join(b.url for b in backends),
            store={"STORE_URL": postgres.url},
        )
        role = service.role.upper()
        values.update({f"{role}_HOST": service.host.addr, f"{role}_PORT": str(service.port)})
        if service.role == "webhook":
            values["SHUTDOWN_DRAIN"] = "2"
        return values

    settings = Settings.from_environ(env(backends[0]))
    # The schema as the migration role; the backends run as the runtime role (DML only).
    migrate_store(Settings.from_environ({"STORE_URL": postgres.owner_url}).store)
    seed_demo(settings)
    for service in (*backends, *webhooks):
        log = (logs / f"{service.name}.log").open("ab")
        service.process = service.host.popen(
            [sys.executable, "-m", "service", "serve", service.role],
            env=env(service),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    for service in (*backends, *webhooks):
        _wait_ok(f"{service.url}/readyz", service)
    proxy.process = _start_caddy(proxy, webhooks, directory / "caddy")
    _wait_ok(f"{proxy.url}/healthz", proxy, ok=404)
    vault.wait_voters()
    return NetCluster(
        net,
        directory,
        vault,
        vault_hosts,
        postgres,
        backends,
        webhooks,
        proxy,
        twilio,
        {"logs": logs},
    )


def _start_vault(hosts: list[Host], directory: Path, logs: Path) -> DevVaultCluster:
    peers = tuple(f"http://{h.addr}:{VAULT_PORT}" for h in hosts)
    binary = find_vault_binary()
    nodes = []
    for i, (host, addr) in enumerate(zip(hosts, peers, strict=True), start=1):
        state = directory / f"vault-{i}"
        state.mkdir(parents=True, mode=0o700, exist_ok=True)
        node = DevVault(
            addr,
            Secret(""),
            state,
            port=VAULT_PORT,
            cluster_port=CLUSTER_PORT,
            node_id=f"vault-{i}",
            peers=peers,
            keyring_path=directory / "vault-keys.dev-only",
        )
        # The dev template listens on loopback; here each node is its host.
        config = dev_server_config(
            data_dir="data",
            port=VAULT_PORT,
            cluster_port=CLUSTER_PORT,
            audit_log="audit.log",
            node_id=f"vault-{i}",
            peers=peers,
        )
        (state / "vault-server.hcl").write_text(config.replace("127.0.0.1", host.addr))
        log = (logs / f"vault-{i}.log").open("ab")
        node.process = host.popen(
            [binary, "server", "-config=vault-server.hcl"],
            cwd=state,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(state)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        nodes.append(node)
    for node in nodes:
        _wait_ok(f"{node.addr}/v1/sys/health", node, ok=501)  # listening, not initialised
    cluster = DevVaultCluster(directory, nodes)
    cluster.open()
    cluster.configure_autopilot()
    return cluster


def _start_caddy(proxy: Service, webhooks: list[Service], home: Path) -> subprocess.Popen[Any]:
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "SITE_ADDRESS": proxy.url,
        "CADDY_ADMIN": "off",
        "WEBHOOK_UPSTREAMS": "to " + " ".join(f"{w.host.addr}:{w.port}" for w in webhooks),
    }
    log = (home / "caddy.log").open("ab")
    return proxy.host.popen(
        [
            find_caddy(),
            "run",
            "--config",
            str(layout_dir() / "proxy" / "Caddyfile.ha"),
            "--adapter",
            "caddyfile",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait_ok(url: str, what: Any, *, ok: int = 200) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        process = getattr(what, "process", None)
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == ok:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}: not {ok} within {READY_TIMEOUT_S:.0f}s")
        time.sleep(0.1)
