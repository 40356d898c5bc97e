"""The server configuration that OpenBao's official chart renders from
deploy/helm/openbao-values.yaml, run by a real OpenBao: it starts from that HCL (paths and
addresses moved to a temporary directory and loopback, as the pod's environment would set
them; the one stanza left out is `service_registration "kubernetes"`, which needs an API
server), serves TLS with the certificate it names, initialises as a Raft node, writes
audit records to stdout; and with openbao-static-seal.yaml added it unseals itself, also
after a restart. The chart's rendering and schema checks are
tests/unit/deploy/test_openbao_values.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.devtools.devstack import find_vault_binary, free_port, stop_process, wait_http
from service.vault.tls import ensure_server_certificate
from tests.support.helm import OPENBAO_CHART, by_kind, load_values, render
from tests.support.repo import ROOT

VALUES = ROOT / "deploy" / "helm" / "openbao-values.yaml"
STATIC_SEAL = ROOT / "deploy" / "helm" / "openbao-static-seal.yaml"
NODE_PATHS = ("/openbao/tls", "/openbao/data", "/openbao/userconfig/openbao-unseal")


@dataclass
class Node:
    root: Path
    port: int
    cluster_port: int
    configs: list[Path]
    process: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def stdout(self) -> Path:
        return self.root / "stdout.log"

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.root / "openbao/tls/ca.crt"))

    def start(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            # What the chart's StatefulSet sets for each pod (its own addresses).
            "BAO_API_ADDR": self.addr,
            "BAO_CLUSTER_ADDR": f"https://127.0.0.1:{self.cluster_port}",
        }
        with self.stdout.open("ab") as out:
            self.process = subprocess.Popen(
                [find_vault_binary(), "server", *[f"-config={c}" for c in self.configs]],
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_http(
            f"{self.addr}/v1/sys/health",
            timeout=30,
            process=self.process,
            ok=(200, 501, 503),
            verify=str(self.root / "openbao/tls/ca.crt"),
        )

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def call(self, method: str, path: str, token: str = "", **kwargs: Any) -> httpx.Response:
        headers = {"X-Vault-Token": token} if token else {}
        return httpx.request(
            method,
            f"{self.addr}/v1/{path}",
            headers=headers,
            verify=self.tls(),
            timeout=10,
            **kwargs,
        )

    def health(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("GET", "sys/health").json()
        return answer


def server_config(*values: Path) -> str:
    objects = render(
        load_values(*values), chart=OPENBAO_CHART, release="openbao", namespace="openbao"
    )
    text: str = by_kind(objects, "ConfigMap")["openbao-config"]["data"][
        "extraconfig-from-values.hcl"
    ]
    return text


def server_args(*values: Path) -> str:
    objects = render(
        load_values(*values), chart=OPENBAO_CHART, release="openbao", namespace="openbao"
    )
    [server] = by_kind(objects, "StatefulSet").values()
    return " ".join(server["spec"]["template"]["spec"]["containers"][0]["args"])


def localise(text: str, root: Path, port: int, cluster_port: int) -> str:
    """The pod's paths under ``root``, its listeners on loopback, without the one stanza
    that needs an API server."""
    for path in NODE_PATHS:
        text = text.replace(path, str(root / path.lstrip("/")))
    text = text.replace("[::]:8200", f"127.0.0.1:{port}")
    text = text.replace("[::]:8201", f"127.0.0.1:{cluster_port}")
    without = re.sub(r'service_registration "kubernetes" \{\}\n?', "", text)
    assert without.count("\n") >= text.count("\n") - 1  # that stanza and nothing else
    return without


@pytest.fixture
def node(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Node]:
    static = request.param == "static seal"
    root = tmp_path / "pod"
    tls = root / "openbao" / "tls"
    tls.mkdir(parents=True)
    (root / "openbao" / "data").mkdir(mode=0o700)
    ensure_server_certificate(tls, tls, tmp_path / "ca", names=["127.0.0.1", "localhost"])
    # The names a cert-manager Certificate gives the Secret's keys.
    shutil.move(tls / "server.crt", tls / "tls.crt")
    shutil.move(tls / "server.key", tls / "tls.key")
    port, cluster_port = free_port(), free_port()
    config = root / "server.hcl"
    config.write_text(localise(server_config(VALUES), root, port, cluster_port))
    configs = [config]
    if static:
        # The Secret openbao-unseal, as openbao-static-seal.yaml describes it, mounted
        # where the chart mounts it; the server reads it through the chart's extraArgs.
        [seal_config] = re.findall(
            r"-config=(/openbao/userconfig/\S+)", server_args(VALUES, STATIC_SEAL)
        )
        secret = root / "openbao" / "userconfig" / "openbao-unseal"
        secret.mkdir(parents=True)
        (secret / "key").write_bytes(os.urandom(32))
        (secret / "seal.hcl").write_text(
            localise(
                'seal "static" {\n  current_key_id = "1"\n'
                '  current_key = "file:///openbao/userconfig/openbao-unseal/key"\n}\n',
                root,
                port,
                cluster_port,
            )
        )
        configs.append(root / seal_config.lstrip("/"))
    running = Node(root, port, cluster_port, configs)
    running.start()
    yield running
    running.stop()


@pytest.mark.parametrize("node", ["manual unseal"], indirect=True)
def test_the_charts_config_serves_tls_initialises_raft_and_audits_to_stdout(node: Node) -> None:
    assert node.health()["initialized"] is False
    init = node.call("PUT", "sys/init", json={"secret_shares": 1, "secret_threshold": 1})
    init.raise_for_status()
    keys, token = init.json()["keys_base64"], init.json()["root_token"]
    assert node.health()["sealed"] is True  # manual: sealed until a share holder unseals
    node.call("PUT", "sys/unseal", json={"key": keys[0]}).raise_for_status()
    wait_http(
        f"{node.addr}/v1/sys/health",
        timeout=30,
        ok=(200,),
        verify=str(node.root / "openbao/tls/ca.crt"),
    )
    devices = node.call("GET", "sys/audit", token).json()
    assert devices["stdout/"]["type"] == "file"
    assert devices["stdout/"]["options"]["file_path"] == "stdout"
    raft = node.call("GET", "sys/storage/raft/configuration", token).json()
    [server] = raft["data"]["config"]["servers"]
    assert server["voter"] is True and server["leader"] is True
    node.call("GET", "sys/mounts", token).raise_for_status()
    records = [
        json.loads(line)
        for line in node.stdout.read_text().splitlines()
        if line.startswith("{") and '"type":"' in line
    ]
    paths = {r["request"]["path"] for r in records if r.get("type") == "request"}
    assert "sys/mounts" in paths
    # Audit values are HMAC'd: the root token never appears in the clear.
    assert token not in node.stdout.read_text()


@pytest.mark.parametrize("node", ["static seal"], indirect=True)
def test_with_the_static_seal_it_unseals_itself_even_after_a_restart(node: Node) -> None:
    init = node.call("PUT", "sys/init", json={"recovery_shares": 1, "recovery_threshold": 1})
    init.raise_for_status()
    assert "recovery_keys_base64" in init.json()
    wait_http(
        f"{node.addr}/v1/sys/health",
        timeout=30,
        ok=(200,),
        verify=str(node.root / "openbao/tls/ca.crt"),
    )
    assert node.health()["sealed"] is False
    node.stop()
    node.start()
    wait_http(
        f"{node.addr}/v1/sys/health",
        timeout=30,
        ok=(200,),
        verify=str(node.root / "openbao/tls/ca.crt"),
    )
    assert node.health()["sealed"] is False
