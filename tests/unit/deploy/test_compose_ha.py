"""docker-compose.ha.yml (an override of docker-compose.yml), checked without a Docker
engine: valid against the Compose Specification schema, and the topology of make run-ha:
three OpenBao nodes in one Raft cluster named by every service, PostgreSQL (pinned) with
its password out of every environment, two backends the webhook fails over between,
webhook replicas behind Caddy, and still only the proxy publishing a port.
(tests/integration/deploy/test_compose_as_processes.py runs each service's own command.)"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import yaml

from service.cli import build_parser
from service.settings import Settings
from tests.support.compose import HA, Compose, load, raw, schema_errors
from tests.support.repo import ROOT

NODES = ("vault", "vault-2", "vault-3")
BACKENDS = ("backend", "backend-2")


@pytest.fixture(scope="module")
def ha() -> Compose:
    return load({"TWILIO_AUTH_TOKEN": "from-the-operator"}, HA)


def test_valid_against_the_compose_specification_schema() -> None:
    assert schema_errors(yaml.safe_load((ROOT / "docker-compose.ha.yml").read_text())) == []
    assert schema_errors(raw(HA)) == []


def test_only_the_proxy_publishes_a_port_and_the_rest_is_internal(ha: Compose) -> None:
    services = ha["services"]
    assert set(services) == {
        *NODES,
        *BACKENDS,
        "vault-unseal",
        "vault-init",
        "db-secret",
        "postgres",
        "webhook",
        "proxy",
    }
    assert {n for n, s in services.items() if s.get("ports")} == {"proxy"}
    for name in (*NODES, *BACKENDS, "postgres", "vault-unseal", "vault-init"):
        assert services[name]["networks"] == ["internal"], name
    assert services["db-secret"]["network_mode"] == "none"


def test_three_nodes_one_cluster(ha: Compose) -> None:
    services = ha["services"]
    config = (ROOT / "vault" / "compose-ha.hcl").read_text(encoding="utf-8")
    joins = re.findall(r'leader_api_addr = "http://([\w-]+):8200"', config)
    assert joins == list(NODES)
    # Per node, from the environment: not in the shared file.
    assert not re.search(r"^\s*(node_id|api_addr|cluster_addr)\s*=", config, re.M)
    data, ids = set(), set()
    for name in NODES:
        node = services[name]
        # The base file's node, as it runs: the server under the audit log's rotation.
        assert node["image"] == services["vault"]["image"]
        assert node["command"] == services["vault"]["command"]
        assert node["command"][-2:] == ["docker-entrypoint.sh", "server"]
        assert "./vault/audit-rotate.sh:/openbao/rotate/audit-rotate.sh:ro" in node["volumes"]
        assert node["environment"]["AUDIT_LOG"] == "/openbao/logs/audit.log"
        assert "./vault/compose-ha.hcl:/openbao/config/server.hcl:ro" in node["volumes"]
        env = node["environment"]
        assert env["BAO_API_ADDR"] == f"http://{name}:8200"
        assert env["BAO_CLUSTER_ADDR"] == f"http://{name}:8201"
        ids.add(env["BAO_RAFT_NODE_ID"])
        (volume,) = [v.split(":")[0] for v in node["volumes"] if v.endswith(":/openbao/file")]
        data.add(volume)
        assert "standbyok=true" in node["healthcheck"]["test"][1]  # a standby is healthy
    assert len(ids) == len(data) == 3  # each node its own id and its own data


def test_every_vault_client_names_every_node(ha: Compose) -> None:
    services = ha["services"]
    nodes = [f"http://{name}:8200" for name in NODES]
    for name in ("vault-unseal", "vault-init", *BACKENDS, "webhook"):
        addr = Settings.from_environ(
            {"VAULT_ADDR": services[name]["environment"]["VAULT_ADDR"]}
        ).vault_addr
        assert list(addr) == nodes, name
    unseal = build_parser().parse_args(services["vault-unseal"]["command"])
    assert (unseal.operator_command, unseal.init) == ("unseal", True)
    assert set(services["vault-unseal"]["depends_on"]) == set(NODES)


def test_postgres_pinned_and_its_password_in_no_environment(ha: Compose) -> None:
    services = ha["services"]
    postgres = services["postgres"]
    image, tag = postgres["image"].split(":")
    assert image == "postgres" and re.fullmatch(r"15\.\d+(-\w+)?", tag)
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/db-secret/password"
    assert "POSTGRES_PASSWORD" not in postgres["environment"]
    assert postgres["depends_on"]["db-secret"]["condition"] == "service_completed_successfully"
    holders = {
        n
        for n, s in services.items()
        if any(v.startswith("db-secret:") for v in s.get("volumes", []))
    }
    assert holders == {"db-secret", "postgres", "vault-init", *BACKENDS}
    for name in ("vault-init", *BACKENDS):
        url = urlsplit(services[name]["environment"]["STORE_URL"])
        assert (url.scheme, url.hostname, url.port, url.password) == (
            "postgresql",
            "postgres",
            5432,
            None,
        ), name
        assert url.query == "passfile=/db-secret/pgpass"
        assert "db-secret:/db-secret:ro" in services[name]["volumes"]
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    script = services["db-secret"]["command"][0]
    assert "umask 077" in script and "token_urlsafe" in script


def test_two_backends_alike_and_the_webhook_fails_over_between_them(ha: Compose) -> None:
    services = ha["services"]
    first, second = (services[name] for name in BACKENDS)
    for key in (
        "image",
        "command",
        "read_only",
        "cap_drop",
        "networks",
        "expose",
        "healthcheck",
        "security_opt",
        "tmpfs",
    ):
        assert second[key] == first[key], key
    assert second["environment"] == {
        k: v for k, v in first["environment"].items() if k != "STORE_PATH"
    }
    assert {v for v in second["volumes"] if "creds" in v} == {"backend-creds:/creds/backend:ro"}
    webhook = services["webhook"]
    assert webhook["deploy"]["replicas"] == 2
    urls = Settings.from_environ({"BACKEND_URL": webhook["environment"]["BACKEND_URL"]})
    assert [urlsplit(u).hostname for u in urls.backend_url] == list(BACKENDS)
    assert {urlsplit(u).port for u in urls.backend_url} == {8081}
    for name in BACKENDS:
        assert webhook["depends_on"][name]["condition"] == "service_healthy"
    # The drain ends well before compose gives up on the stop and kills it.
    drain = float(webhook["environment"]["SHUTDOWN_DRAIN"])
    assert drain > 0 and drain + 10 < int(webhook["stop_grace_period"].rstrip("s"))


def test_caddy_balances_the_webhook_replicas(ha: Compose) -> None:
    proxy = ha["services"]["proxy"]
    assert "./proxy/Caddyfile.ha:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    assert "./proxy/edge.caddy:/etc/caddy/edge.caddy:ro" in proxy["volumes"]
    assert "./proxy/Caddyfile:/etc/caddy/Caddyfile:ro" not in proxy["volumes"]
    assert proxy["environment"]["WEBHOOK_UPSTREAMS"] == "dynamic a webhook 8080"
    caddyfile = "".join(
        (ROOT / "proxy" / name).read_text(encoding="utf-8")
        for name in ("Caddyfile.ha", "edge.caddy")
    )
    for name in proxy["environment"]:
        assert "{$" + name in caddyfile, name
    assert "health_uri /readyz" in caddyfile and "lb_try_duration" in caddyfile
