"""``make run-ha``'s Vault: three OpenBao nodes on loopback, one Raft cluster.

Each node is a :class:`~service.devtools.devstack.DevVault` (server mode, Raft storage, a
file audit device) in its own directory, with ``retry_join`` naming every node; the
cluster's one dev keyring sits beside them. The first start initialises node 1 (one key
share: development only) and gives the others the key, with which they join; autopilot
makes them voters. Every later start unseals all three with the kept key
(:func:`~service.vault.operator_init.open_cluster`, the code compose's unseal step runs).

The ports are chosen once and kept in ``vault-ports.json``: Raft knows its peers by
address, so a cluster restarted on other ports would never find its quorum again.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from service.devtools.devstack import DevVault, find_vault_binary, free_port
from service.errors import ConfigError, VaultError, VaultUnavailable
from service.settings import Secret
from service.vault.client import VaultClient
from service.vault.operator_init import DevKeyring, VaultServer, open_cluster

NODES = 3
# autopilot promotes a node that joined to a voter once it has been healthy this long. Its
# default, 10 s, left the first start with one voter for ~16 s (measured here): a leader
# killed then takes the whole cluster down. 2 s: voters ~4 s after the join.
STABILIZATION = "2s"
VOTERS_TIMEOUT_S = 60.0


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_ports(path: Path, size: int) -> list[tuple[int, int]]:
    """(API port, cluster port) of each node: kept in ``path`` from the first start on."""
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        ports = [(int(node["api"]), int(node["cluster"])) for node in saved["nodes"]]
        taken = [p for pair in ports for p in pair if not _port_free(p)]
        if taken:
            raise ConfigError(
                f"the dev Vault cluster's ports {taken} are taken (its nodes "
                f"keep the ports in {path}); stop what uses them"
            )
        return ports
    ports = [(free_port(), free_port()) for _ in range(size)]
    path.write_text(
        json.dumps({"nodes": [{"api": a, "cluster": c} for a, c in ports]}, indent=2) + "\n",
        encoding="utf-8",
    )
    return ports


@dataclass
class DevVaultCluster:
    state_dir: Path
    nodes: list[DevVault]
    root_token: Secret = field(default_factory=lambda: Secret(""))

    @property
    def addrs(self) -> tuple[str, ...]:
        return tuple(node.addr for node in self.nodes)

    @property
    def keyring(self) -> DevKeyring:
        return DevKeyring(self.state_dir / "vault-keys.dev-only")

    @classmethod
    def start(
        cls, state_dir: Path, *, size: int = NODES, wait_voters: bool = True
    ) -> DevVaultCluster:
        """Start the cluster kept in ``state_dir`` (a new one when there is none),
        unsealed, with a leader; ``wait_voters``: and every node a voter (else call
        :meth:`wait_voters` before relying on it surviving the loss of a node)."""
        state_dir.mkdir(parents=True, exist_ok=True)
        ports = cluster_ports(state_dir / "vault-ports.json", size)
        peers = tuple(f"http://127.0.0.1:{api}" for api, _ in ports)
        nodes = []
        for i, (api, cluster_port) in enumerate(ports, start=1):
            (state_dir / f"vault-{i}").mkdir(mode=0o700, exist_ok=True)
            nodes.append(
                DevVault(
                    peers[i - 1],
                    Secret(""),
                    state_dir / f"vault-{i}",
                    port=api,
                    cluster_port=cluster_port,
                    node_id=f"vault-{i}",
                    peers=peers,
                    keyring_path=state_dir / "vault-keys.dev-only",
                )
            )
        cluster = cls(state_dir, nodes)
        try:
            binary = find_vault_binary()
            for node in nodes:
                node.launch(binary)
            cluster.open()
            cluster.configure_autopilot()
            if wait_voters:
                cluster.wait_voters()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def open(self) -> None:
        """Unseal every running node (initialise the cluster the first time); wait until
        a node is active and all are unsealed."""
        servers = [VaultServer(node.addr) for node in self.nodes if node.running]
        try:
            keys = open_cluster(servers, self.keyring, initialise_if_new=True)
        finally:
            for server in servers:
                server.close()
        self.root_token = keys.root_token
        for node in self.nodes:
            node.root_token = keys.root_token

    def admin(self) -> VaultClient:
        return VaultClient(self.addrs, self.root_token, timeout=10)

    def configure_autopilot(self) -> None:
        admin = self.admin()
        try:
            admin.write(
                "sys/storage/raft/autopilot/configuration",
                "autopilot config",
                {"server_stabilization_time": STABILIZATION},
            )
        finally:
            admin.close()

    def wait_voters(self, *, timeout: float = VOTERS_TIMEOUT_S) -> float:
        """Wait until every node is a healthy voter (the cluster survives losing one);
        the seconds it took. (The first start: ~10 s after the leader was elected,
        whatever the stabilization time, measured here.)"""
        started = time.monotonic()
        admin = self.admin()
        try:
            while True:
                try:
                    state = admin.read("sys/storage/raft/autopilot/state", "autopilot state")[
                        "data"
                    ]
                    if state.get("healthy") and len(state.get("voters") or []) == len(self.nodes):
                        return time.monotonic() - started
                except VaultError:
                    pass  # no leader yet
                if time.monotonic() - started > timeout:
                    raise VaultUnavailable(
                        f"the dev Vault cluster has no {len(self.nodes)} "
                        f"healthy voters after {timeout:.0f}s"
                    )
                time.sleep(0.2)
        finally:
            admin.close()

    def leader(self) -> DevVault | None:
        """The active node, if one is."""
        for node in self.nodes:
            if not node.running:
                continue
            server = VaultServer(node.addr, timeout=2)
            try:
                if server.health_status() == 200:
                    return node
            except VaultError:
                continue
            finally:
                server.close()
        return None

    def restart(self, node: DevVault) -> None:
        """Start a node that died again: it comes back sealed, is unsealed, rejoins."""
        node.launch()
        self.open()

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
