"""Charts rendered offline, in this process (helm-python-sdk: Helm's Go SDK through ctypes;
it starts no process and opens no socket, checked with strace), and their objects checked
with kubernetes-validate's bundled schemas."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

from tests.support.repo import ROOT

CHART = ROOT / "deploy" / "helm" / "ivr-vault"
OPENBAO_CHART = ROOT / "tests" / "data" / "openbao-helm-0.29.2" / "openbao-0.29.2.tgz"
RELEASE, NAMESPACE = "ivr-vault", "ivr"

# The value sets the chart is rendered with: its defaults, and the example files beside it.
VALUE_SETS: Mapping[str, Path | None] = {
    "default": None,
    "ha": ROOT / "deploy" / "helm" / "ivr-vault-ha.yaml",
    "production": ROOT / "deploy" / "helm" / "ivr-vault-production.yaml",
}

# Two supported Kubernetes minor versions, oldest and newest that both the chart
# (Chart.yaml kubeVersion) and kubernetes-validate cover.
KUBE_VERSIONS = ("1.31.0", "1.34.0")

Obj = dict[str, Any]


def load_values(*paths: Path | None) -> dict[str, Any]:
    """Values files merged as `helm -f a -f b` merges them (maps deeply, the rest replaced)."""
    merged: dict[str, Any] = {}
    for path in paths:
        if path is not None:
            merged = _merge(merged, yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return merged


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = value
    return result


@cache
def _chart(path: Path) -> helm.Chart:
    if path.suffix == ".tgz":
        return helm.Chart.load_archive(path.read_bytes())
    return helm.Chart.load(path)


def render(
    values: Mapping[str, Any] | None = None,
    *,
    chart: Path = CHART,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[Obj]:
    """Every object the chart renders (hooks included, helm tests and NOTES not), after the
    values were checked against the chart's values.schema.json."""
    texts = _render(chart, json.dumps(values or {}, sort_keys=True), release, namespace)
    return [obj for text in texts for obj in yaml.safe_load_all(text) if obj]


@cache
def _render(chart: Path, values: str, release: str, namespace: str) -> tuple[str, ...]:
    """The manifests' text, once per chart and values (each test parses its own copy)."""
    loaded = _chart(chart)
    merged = loaded.merge_values(json.loads(values))
    loaded.validate_schema(merged)
    manifests = loaded.render(merged, name=release, namespace=namespace, is_install=True)
    return tuple(
        text
        for name, text in sorted(manifests.items())
        if name.endswith((".yaml", ".yml")) and "/templates/tests/" not in name
    )


def render_set(name: str) -> list[Obj]:
    return render(load_values(VALUE_SETS[name]))


def pod_specs(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(object, pod spec) for every object that makes pods."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield obj, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            yield obj, obj["spec"]


def validate(obj: Obj, version: str) -> None:
    """kubernetes-validate --strict: unknown fields are errors too."""
    kubernetes_validate.validate(obj, version, strict=True)


def by_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}
