"""The NetworkPolicies, judged by what they allow: from the rendered policies alone (their
selectors, peers and ports, evaluated as Kubernetes does: tests/support/netpol.py), which
party can open a connection to which, compared with the trust graph written once in
deploy/helm/ivr-vault/files/trust-graph.yaml. Parties: the chart's pods, the outside
parties the values name, and strangers (a pod of another app in the same namespace, a pod
in another namespace, an address on the internet), which must reach nothing and be
reached by nothing."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.support.helm import CHART, NAMESPACE, RELEASE, VALUE_SETS, Obj, load_values, render
from tests.support.netpol import Party, allowed

GRAPH = yaml.safe_load((CHART / "files" / "trust-graph.yaml").read_text(encoding="utf-8"))
STRANGERS = [
    Party(
        "stranger-here",
        NAMESPACE,
        {"app": "other"},
        {"kubernetes.io/metadata.name": NAMESPACE},
        ip="10.1.0.50",
        ports={"http": 8080},
    ),
    Party(
        "stranger-elsewhere",
        "default",
        {"app": "other"},
        {"kubernetes.io/metadata.name": "default"},
        ip="10.1.0.51",
        ports={"http": 8080},
    ),
    Party("internet", ip="203.0.113.9"),
]
STRANGER_PORTS = [(8080, "TCP"), (443, "TCP"), (53, "UDP"), (5432, "TCP"), (8200, "TCP")]


def own_pod(component: str, port: int | None) -> Party:
    labels = {
        "app.kubernetes.io/name": "ivr-vault",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": component,
    }
    return Party(
        component,
        NAMESPACE,
        labels,
        {"kubernetes.io/metadata.name": NAMESPACE},
        ip=f"10.1.0.{10 + GRAPH['components'].index(component)}",
        ports={"http": port} if port else {},
    )


def outside_party(name: str, peer: Obj) -> Party:
    """A party that the peer's selectors (or CIDR) describe."""
    if "ipBlock" in peer:
        network = ipaddress.ip_network(peer["ipBlock"]["cidr"])
        return Party(name, ip=str(next(network.hosts())))
    namespace_labels = dict((peer.get("namespaceSelector") or {}).get("matchLabels") or {})
    namespace = namespace_labels.setdefault("kubernetes.io/metadata.name", NAMESPACE)
    labels = dict((peer.get("podSelector") or {}).get("matchLabels") or {})
    for expr in (peer.get("podSelector") or {}).get("matchExpressions") or []:
        if expr["operator"] == "In":
            labels[expr["key"]] = expr["values"][0]
    return Party(name, namespace, labels, namespace_labels, ip="10.2.0.9")


def parties(values: dict[str, Any]) -> tuple[dict[str, Party], dict[str, list[tuple[int, str]]]]:
    """Every party of the graph present in these values, and the ports each listens on."""
    ports = {"webhook": values["webhook"]["port"], "backend": values["backend"]["port"]}
    found: dict[str, Party] = {}
    listens: dict[str, list[tuple[int, str]]] = {}
    for component in GRAPH["components"]:
        found[component] = own_pod(component, ports.get(component))
        listens[component] = [(ports[component], "TCP")] if component in ports else []
    for name, spec in values["networkPolicy"]["peers"].items():
        peers = spec.get("from") or spec.get("to") or []
        if peers:
            found[name] = outside_party(name, peers[0])
            listens[name] = [(p["port"], p.get("protocol", "TCP")) for p in spec.get("ports", [])]
    return found, listens


def reachable(policies: list[Obj], values: dict[str, Any]) -> set[tuple[str, str, int, str]]:
    """(source, target, port, protocol) for every connection the policies allow, between a
    pod in the release's namespace and any party (the policies govern no other pair)."""
    found, listens = parties(values)
    everyone = [*found.values(), *STRANGERS]
    result = set()
    for source in everyone:
        for target in everyone:
            if source is target:
                continue
            if NAMESPACE not in (source.namespace, target.namespace):
                continue
            for port, protocol in listens.get(target.name, STRANGER_PORTS):
                if allowed(policies, source, target, port, protocol):
                    result.add((source.name, target.name, port, protocol))
    return result


def expected(values: dict[str, Any]) -> set[tuple[str, str, int, str]]:
    found, listens = parties(values)
    return {
        (edge["from"], edge["to"], port, protocol)
        for edge in GRAPH["edges"]
        if edge["from"] in found and edge["to"] in found
        for port, protocol in listens[edge["to"]]
    }


def rendered_policies(values: dict[str, Any]) -> list[Obj]:
    policies = [obj for obj in render(values) if obj["kind"] == "NetworkPolicy"]
    for policy in policies:  # helm installs them into the release's namespace
        policy["metadata"]["namespace"] = NAMESPACE
    return policies


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_the_policies_allow_exactly_the_trust_graph(name: str) -> None:
    raw = load_values(VALUE_SETS[name])
    values = helm.Chart.load(CHART).merge_values(raw)
    allowed_now = reachable(rendered_policies(raw), values)
    assert allowed_now == expected(values)
    # The edges the issue names are among them, whichever values.
    names = {(source, target) for source, target, _port, _proto in allowed_now}
    assert {
        ("ingressController", "webhook"),
        ("webhook", "backend"),
        ("webhook", "openbao"),
        ("backend", "openbao"),
        ("backend", "postgresql"),
        ("webhook", "dns"),
        ("backend", "dns"),
    } <= names
    assert ("webhook", "postgresql") not in names and ("ingressController", "backend") not in names


def test_monitoring_reaches_metrics_only_when_named() -> None:
    raw = load_values(VALUE_SETS["production"])
    values = helm.Chart.load(CHART).merge_values(raw)
    names = {(s, t) for s, t, _p, _q in reachable(rendered_policies(raw), values)}
    assert {("monitoring", "webhook"), ("monitoring", "backend")} <= names
    default = helm.Chart.load(CHART).merge_values({})
    assert not any(s == "monitoring" for s, _t, _p, _q in expected(default))


def test_the_check_sees_a_missing_and_an_extra_edge() -> None:
    """The comparison can fail both ways: without the backend's ingress rule the webhook
    cannot reach it; with an allow-all egress added the webhook reaches strangers."""
    values = helm.Chart.load(CHART).merge_values({})
    policies = rendered_policies({})
    missing = copy.deepcopy(policies)
    for policy in missing:
        if policy["metadata"]["name"].endswith("-backend"):
            policy["spec"]["ingress"] = []
    assert ("webhook", "backend", 8081, "TCP") in expected(values) - reachable(missing, values)
    extra = [
        *copy.deepcopy(policies),
        {
            "metadata": {"name": "oops", "namespace": NAMESPACE},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
        },
    ]
    assert ("webhook", "internet", 443, "TCP") in reachable(extra, values) - expected(values)
    without_deny = [p for p in policies if not p["metadata"]["name"].endswith("default-deny")]
    # Every pod of the chart has its own policy, so the default deny is what isolates a
    # stranger pod in the namespace.
    assert ("stranger-here", "internet", 443, "TCP") in reachable(without_deny, values)
