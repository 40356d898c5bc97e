"""``make run-ha`` (``ivr-vault dev --ha``): the topology past one machine, on loopback.

::

    Caddy 127.0.0.1:WEBHOOK_PORT ──▶ webhook-1, webhook-2   (active checks on /readyz)
    webhook-* ──▶ backend-1, backend-2                       (BACKEND_URL: both)
    every service ──▶ vault-1, vault-2, vault-3               (VAULT_ADDR: all three)
    backend-* ──▶ the account store, shared                   (STORE_URL)

Everything is kept under ``.dev/ha/`` (the Vault cluster's data and dev-only keys,
PostgreSQL's data and password file, every process's log in ``.dev/ha/logs/``), so a
second ``make run-ha`` finds the first one's keys and accounts. In ``.dev/`` itself, as
``make run`` writes them (whichever ran last owns them): ``vault.env`` (``VAULT_ADDR`` with
the three nodes, the root token, ``STORE_URL``) and each role's AppRole credentials, for
``ivr-vault accounts …`` and ``keys …``; and ``cluster.json``, every process with its
role, name, pid and URL, rewritten whenever one changes.

A process that dies is started again, as an orchestrator would: a service on its port, a
Vault node unsealed and back in its cluster, Caddy on its port. So a rolling restart is
``kill -TERM <pid>`` from cluster.json: the webhook turns unready, drains, exits, and
comes back. Ctrl-C stops everything; every child also dies with this process.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from service.cluster import cluster_member, forget_cluster_json, write_cluster_json
from service.devtools.devstack import ServiceProcess, free_port, wait_http
from service.devtools.launcher import (
    READY_TIMEOUT_S,
    ROOT_TOKEN_FILE,
    hold_lock,
    prepare_store,
    secret_file,
    service_environment,
    stop_on_signals,
    wait_backend_ready,
    write_vault_env,
)
from service.devtools.postgres import LocalPostgres
from service.devtools.proxy import DevProxy
from service.devtools.vault_cluster import DevVaultCluster
from service.errors import IvrVaultError, ServiceNotReady
from service.settings import Settings
from service.vault.bootstrap import bootstrap, issue_credentials

REPLICAS = 2
# The webhooks' SHUTDOWN_DRAIN: Caddy checks /readyz every 0.5 s (proxy/Caddyfile.ha), so
# 2 s leaves it four checks to take a draining webhook out before it stops accepting.
WEBHOOK_DRAIN_S = 2.0
_POLL_S = 0.2


@dataclass
class HaStack:
    """What ``make run-ha`` runs, and how each piece is started again."""

    state_dir: Path  # .dev
    vault: DevVaultCluster
    postgres: LocalPostgres
    backends: list[ServiceProcess]
    webhooks: list[ServiceProcess]
    proxy: DevProxy
    twilio_token_file: Path

    @property
    def store(self) -> str:
        """Where the store is, for a person: no password, no query."""
        return f"postgresql://127.0.0.1:{self.postgres.port}/ivr"

    @property
    def ha_dir(self) -> Path:
        return self.state_dir / "ha"

    def members(self) -> list[dict[str, Any]]:
        """cluster.json's ``processes``."""
        found: list[dict[str, Any]] = []
        for node in self.vault.nodes:
            found.append(cluster_member("vault", node.node_id, node.process, node.addr))
        found.append(cluster_member("postgres", "postgres", self.postgres.process, self.store))
        for service in (*self.backends, *self.webhooks):
            found.append(cluster_member(service.role, service.label, service.process, service.url))
        found.append(cluster_member("proxy", "proxy", self.proxy.process, self.proxy.url))
        return found

    def write_cluster_json(self) -> None:
        write_cluster_json(self.state_dir, self.members())

    def restart_the_dead(self) -> list[str]:
        """Start again every process that exited; the names of those started. One that
        fails to start is tried again at the next round."""
        started: list[str] = []

        def again(name: str, start: Callable[[], object]) -> None:
            try:
                start()
            except (OSError, RuntimeError, TimeoutError, IvrVaultError) as exc:
                print(
                    f"ivr-vault: {name} did not start again ({exc}); trying again",
                    file=sys.stderr,
                    flush=True,
                )
                return
            started.append(name)

        for node in self.vault.nodes:
            if not node.running:
                again(node.node_id, partial(self.vault.restart, node))
        if self.postgres.process is None or self.postgres.process.poll() is not None:
            again("postgres", self.postgres.start)  # same port, same data
        for service in (*self.backends, *self.webhooks):
            if not service.running:
                again(service.label, service.start)
        if not self.proxy.running:
            again("proxy", self.proxy.launch)
        return started


def run_ha(settings: Settings, environ: Mapping[str, str], *, state_dir: Path) -> int:
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, _private_dir_mode())
    with ExitStack() as stack:
        hold_lock(state_dir, stack)
        stop_on_signals()
        started = time.monotonic()
        ha = start_ha(settings, environ, state_dir=state_dir, stack=stack)
        stack.callback(forget_cluster_json, state_dir)
        ha.write_cluster_json()
        print(f"ivr-vault: make run-ha ready in {time.monotonic() - started:.1f} s", flush=True)
        return _supervise(ha)


def start_ha(
    settings: Settings, environ: Mapping[str, str], *, state_dir: Path, stack: ExitStack
) -> HaStack:
    """Start the whole topology, kept in ``state_dir/ha``; every process is stopped when
    ``stack`` closes. (The bench measures the same topology through this function.)"""
    ha_dir = state_dir / "ha"
    ha_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ha_dir, _private_dir_mode())
    logs = ha_dir / "logs"
    vault = DevVaultCluster.start(ha_dir / "vault", wait_voters=False)
    stack.callback(vault.stop)
    vault_addr = ",".join(vault.addrs)
    print(
        f"Dev Vault cluster (OpenBao, 3 nodes, Raft) at {vault_addr}; data and the "
        f"dev-only keyring in {vault.state_dir}",
        flush=True,
    )

    admin = vault.admin()
    layout = bootstrap(admin)
    creds = issue_credentials(
        admin,
        ["ivr-webhook", "ivr-backend", "ivr-keyadmin", "ivr-backup"],
        approle_mount=layout.approle_mount,
    )
    admin.close()
    for role, c in creds.items():
        # In .dev/ beside vault.env, as make run writes them: whichever ran last, the
        # operator CLI finds the identities that belong to the Vault vault.env names.
        c.write(state_dir / role)

    postgres = _start_store(ha_dir, stack)
    # No password in either: it is in the passfile they name. The backends log in as the
    # runtime role (DML only); the operator (.dev/vault.env: migrate, restore) and the
    # schema step below as the migration role.
    store = {"STORE_URL": postgres.url}
    owner = {"STORE_URL": postgres.owner_url}
    write_vault_env(state_dir / "vault.env", vault_addr, vault.root_token.reveal(), owner)

    twilio_file = secret_file(state_dir / "twilio-auth-token", environ.get("TWILIO_AUTH_TOKEN"))
    backend_file = secret_file(state_dir / "backend-token", environ.get("BACKEND_TOKEN"))
    backend_ports = [free_port() for _ in range(REPLICAS)]
    public = f"http://127.0.0.1:{settings.webhook_port}"  # Caddy's: what Twilio signs

    def service_env(role: str) -> dict[str, str]:
        env = service_environment(
            environ,
            role,
            vault_addr=vault_addr,
            approle_dir=state_dir,
            backend_token_file=backend_file,
            twilio_file=twilio_file,
            public_base_url=public,
            backend_url=",".join(f"http://127.0.0.1:{p}" for p in backend_ports),
            store=store,
        )
        if role == "webhook":
            env.setdefault("SHUTDOWN_DRAIN", str(WEBHOOK_DRAIN_S))
        return env

    prepare_store(Settings.from_environ({**service_env("backend"), **owner}))  # migrate, seed

    backends = [
        _service("backend", i, port, service_env("backend"), logs)
        for i, port in enumerate(backend_ports, start=1)
    ]
    webhooks = [
        _service("webhook", i, free_port(), service_env("webhook"), logs)
        for i in range(1, REPLICAS + 1)
    ]
    _start_services(backends, webhooks, stack)
    proxy = DevProxy.start(
        ha_dir / "caddy",
        port=settings.webhook_port,
        upstreams=[f"127.0.0.1:{w.port}" for w in webhooks],
    )
    stack.callback(proxy.stop)
    vault.wait_voters()
    return HaStack(state_dir, vault, postgres, backends, webhooks, proxy, Path(twilio_file))


def _supervise(ha: HaStack) -> int:
    """Until Ctrl-C (or SIGTERM): start again whatever dies, and say so."""
    try:  # a Ctrl-C the moment the block is printed is a clean stop too
        print(_banner(ha), flush=True)
        while True:
            time.sleep(_POLL_S)
            restarted = ha.restart_the_dead()
            if restarted:
                print(f"ivr-vault: started again: {', '.join(restarted)}", flush=True)
                ha.write_cluster_json()
    except KeyboardInterrupt:
        print("\nivr-vault: stopping.", flush=True)
        return 0


def _start_services(
    backends: list[ServiceProcess], webhooks: list[ServiceProcess], stack: ExitStack
) -> None:
    """Start them all and wait until each is ready (:class:`ServiceNotReady`: one that
    will not be, by waiting)."""
    for service in (*backends, *webhooks):
        stack.callback(service.stop, sig=signal.SIGINT)  # no drain on Ctrl-C
        service.start()
    for backend in backends:
        refused = wait_backend_ready(backend)
        if refused:
            raise ServiceNotReady(
                f"{backend.label} is not ready: {refused} (its log: {backend.stderr_path})"
            )
    for webhook in webhooks:
        wait_http(f"{webhook.url}/readyz", timeout=READY_TIMEOUT_S)


def _private_dir_mode() -> int:
    """``.dev`` and ``.dev/ha``: only ours, but run as root the PostgreSQL server runs as
    the ``postgres`` user and must pass through them to its data: traverse, not list (what
    is inside is 0600 or the server's own)."""
    return 0o711 if os.geteuid() == 0 else 0o700


def _service(role: str, index: int, port: int, env: dict[str, str], logs: Path) -> ServiceProcess:
    return ServiceProcess(
        role, port, {**env, f"{role.upper()}_PORT": str(port)}, logs, name=f"{role}-{index}"
    )


def _start_store(ha_dir: Path, stack: ExitStack) -> LocalPostgres:
    """The PostgreSQL the backends share, its data kept in ``ha_dir/postgres``: a real
    server on loopback, TCP with a SCRAM password in a libpq password file beside it
    (service/devtools/postgres.py). Stopped last but one, before Vault."""
    postgres = LocalPostgres(ha_dir)
    postgres.start()
    stack.callback(postgres.stop)
    return postgres


def _banner(ha: HaStack) -> str:
    call = ".venv/bin/ivr-vault call --card 1234 --pin 4321"
    if ha.proxy.port != 8080:
        call += f" --url {ha.proxy.url}"  # call's own default is 8080
    return f"""
ivr-vault (HA) is running.
  proxy     {ha.proxy.url}   (Caddy: the webhooks by their /readyz; Twilio voice URL: \
<its https URL>/voice)
  webhooks  {", ".join(w.url for w in ha.webhooks)}
  backends  {", ".join(b.url for b in ha.backends)}   (internal)
  vault     {", ".join(ha.vault.addrs)}
  store     {ha.store}
  every process: {ha.state_dir}/cluster.json; logs: {ha.ha_dir}/logs/
Operator commands need nothing sourced (.venv/bin/ivr-vault keys status). The bao CLI, as root:
  VAULT_ADDR={ha.vault.addrs[0]} VAULT_TOKEN=$(cat {ha.state_dir / ROOT_TOKEN_FILE}) \
.venv/bin/bao status
A process that dies is started again (kill -TERM a pid from cluster.json: a rolling restart).

Place a test call:
  {call}
Ctrl-C stops everything.
"""
