"""deploy/helm/openbao-values.yaml (and the static-seal option on top of it) against
OpenBao's official chart 0.29.2, vendored in tests/data/openbao-helm-0.29.2/: checked
against the chart's own values schema, rendered offline, every object validated with
kubernetes-validate --strict, and the server configuration read for what docs/kubernetes.md
promises (3-node Raft with retry_join, TLS, audit device, PDB, no injector)."""

from __future__ import annotations

import re

import pytest

from tests.support.helm import (
    KUBE_VERSIONS,
    OPENBAO_CHART,
    Obj,
    by_kind,
    load_values,
    pod_specs,
    render,
    validate,
)
from tests.support.repo import ROOT

VALUES = ROOT / "deploy" / "helm" / "openbao-values.yaml"
STATIC_SEAL = ROOT / "deploy" / "helm" / "openbao-static-seal.yaml"
SETS = {"manual unseal": (VALUES,), "static seal": (VALUES, STATIC_SEAL)}


def rendered(name: str) -> list[Obj]:
    return render(
        load_values(*SETS[name]), chart=OPENBAO_CHART, release="openbao", namespace="openbao"
    )


def server_config(objects: list[Obj]) -> str:
    config = by_kind(objects, "ConfigMap")["openbao-config"]
    text: str = config["data"]["extraconfig-from-values.hcl"]
    return text


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", list(SETS))
def test_rendered_with_our_values_and_valid(name: str, version: str) -> None:
    objects = rendered(name)
    assert len(objects) >= 12
    for obj in objects:
        validate(obj, version)


def test_three_raft_nodes_joined_over_tls_with_the_audit_device() -> None:
    objects = rendered("manual unseal")
    [server] = by_kind(objects, "StatefulSet").values()
    assert server["spec"]["replicas"] == 3
    config = server_config(objects)
    assert 'storage "raft"' in config
    joins = re.findall(r'leader_api_addr\s*=\s*"([^"]+)"', config)
    assert joins == [f"https://openbao-{n}.openbao-internal:8200" for n in range(3)]
    assert config.count("leader_ca_cert_file") == 3
    assert "tls_disable" not in config
    assert 'tls_cert_file   = "/openbao/tls/tls.crt"' in config
    assert re.search(r'audit "file" "\w+" \{', config)
    assert 'service_registration "kubernetes"' in config
    env = {
        e["name"]: e.get("value")
        for e in server["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["BAO_ADDR"].startswith("https://")
    mounts = {
        m["mountPath"] for m in server["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert "/openbao/tls" in mounts


def test_a_disruption_budget_keeps_the_quorum_and_no_injector_runs() -> None:
    objects = rendered("manual unseal")
    [budget] = by_kind(objects, "PodDisruptionBudget").values()
    assert budget["spec"]["maxUnavailable"] == 1
    names = {obj["metadata"]["name"] for obj in objects}
    assert not any("injector" in name or "csi" in name for name in names)
    assert [obj["metadata"]["name"] for obj, _pod in pod_specs(objects)] == ["openbao"]
    [policy] = by_kind(objects, "NetworkPolicy").values()
    assert len(policy["spec"]["ingress"]) == 2


def test_manual_unseal_unless_the_static_seal_is_added() -> None:
    manual, static = rendered("manual unseal"), rendered("static seal")
    assert "seal " not in server_config(manual)

    def server_args(objects: list[Obj]) -> str:
        [server] = by_kind(objects, "StatefulSet").values()
        return " ".join(server["spec"]["template"]["spec"]["containers"][0]["args"])

    assert "seal.hcl" not in server_args(manual)
    assert "-config=/openbao/userconfig/openbao-unseal/seal.hcl" in server_args(static)
    [server] = by_kind(static, "StatefulSet").values()
    volumes = {v["name"]: v for v in server["spec"]["template"]["spec"]["volumes"]}
    assert volumes["userconfig-openbao-unseal"]["secret"]["secretName"] == "openbao-unseal"


def test_the_charts_schema_refuses_a_wrong_value() -> None:
    """Our values pass the chart's schema because they are right, not because it accepts
    anything."""
    with pytest.raises(Exception, match="replicas"):
        render(
            {"server": {"ha": {"enabled": True, "replicas": "three"}}},
            chart=OPENBAO_CHART,
            release="openbao",
            namespace="openbao",
        )
