"""Kubernetes NetworkPolicy semantics, as far as a reachability check needs them: which
policies select a pod, whether a peer (namespaceSelector/podSelector/ipBlock) matches
another party, whether a port is admitted. A connection is allowed when the source's
egress and the destination's ingress both allow it; a pod no policy of that direction
selects is not isolated in that direction (networking.k8s.io/v1)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class Party:
    """A pod (namespace, labels, named ports) or an address outside the cluster's pods."""

    name: str
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    ip: str = "10.99.0.1"
    ports: Mapping[str, int] = field(default_factory=dict)  # named container ports

    @property
    def is_pod(self) -> bool:
        return bool(self.namespace)


def selects(selector: Obj | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector: matchLabels and matchExpressions, all of them; {} selects all."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[op]
        if not ok:
            return False
    return True


def peer_matches(peer: Obj, other: Party, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if not other.is_pod:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], other.labels)


def port_matches(rule_ports: Iterable[Obj] | None, port: int, protocol: str, target: Party) -> bool:
    ports = list(rule_ports or [])
    if not ports:
        return True  # no ports: every port
    for item in ports:
        if item.get("protocol", "TCP") != protocol:
            continue
        wanted = item.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            wanted = target.ports.get(wanted)
        end = item.get("endPort", wanted)
        if wanted is not None and wanted <= port <= end:
            return True
    return False


def _direction_allows(
    policies: Sequence[Obj],
    subject: Party,
    other: Party,
    port: int,
    protocol: str,
    kind: str,
    target: Party,
) -> bool:
    """Does ``subject``'s side allow the connection in direction ``kind`` (Ingress/Egress)?"""
    key, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == subject.namespace
        and kind in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], subject.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        namespace = policy["metadata"]["namespace"]
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if peers is not None and not any(
                peer_matches(peer, other, namespace) for peer in peers
            ):
                continue
            if port_matches(rule.get("ports"), port, protocol, target):
                return True
    return False


def allowed(
    policies: Sequence[Obj], source: Party, target: Party, port: int, protocol: str = "TCP"
) -> bool:
    """Whether ``source`` may open a connection to ``target``'s ``port`` under
    ``policies``; only a pod's own namespace's policies isolate it."""
    egress = not source.is_pod or _direction_allows(
        policies, source, target, port, protocol, "Egress", target
    )
    ingress = not target.is_pod or _direction_allows(
        policies, target, source, port, protocol, "Ingress", target
    )
    return egress and ingress
