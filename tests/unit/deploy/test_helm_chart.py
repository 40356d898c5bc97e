"""deploy/helm/ivr-vault rendered offline with its default, HA and production values
(tests/support/helm.py): lint, kubernetes-validate --strict for two Kubernetes versions, the
restricted Pod Security Standard, availability, service-account login, hooks, no secret
inline, and the prometheus-operator objects' structure (no schema ships for those CRDs).
The NetworkPolicies' reachability: test_helm_network.py."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from pathlib import PurePosixPath
from typing import Any

import helm_python as helm
import pytest
import yaml

from bench.load import REQUESTS_PER_CALL
from service.settings import Settings, env_name, spec
from service.vault.bootstrap import Layout
from tests.support.helm import (
    CHART,
    KUBE_VERSIONS,
    NAMESPACE,
    VALUE_SETS,
    Obj,
    by_kind,
    load_values,
    pod_specs,
    render,
    render_set,
    validate,
)
from tests.support.repo import ROOT

SETS = list(VALUE_SETS)
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}  # prometheus-operator's CRDs
SECRET_SETTINGS = {env_name(f) for f in dataclasses.fields(Settings) if spec(f).secret}


def values_of(name: str) -> dict[str, Any]:
    """The chart's effective values for a set (defaults merged)."""
    return helm.Chart.load(CHART).merge_values(load_values(VALUE_SETS[name]))


def containers(pod: Obj) -> list[Obj]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def env_of(container: Obj) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "default",
            {
                "ConfigMap": 1,
                "Deployment": 2,
                "HorizontalPodAutoscaler": 2,
                "Job": 2,
                "NetworkPolicy": 5,
                "PodDisruptionBudget": 2,
                "Service": 2,
                "ServiceAccount": 2,
            },
        ),
        (
            "ha",
            {
                "ConfigMap": 1,
                "Deployment": 2,
                "Job": 2,
                "NetworkPolicy": 5,
                "PodDisruptionBudget": 2,
                "Service": 2,
                "ServiceAccount": 2,
            },
        ),
        (
            "production",
            {
                "ConfigMap": 1,
                "Deployment": 2,
                "HorizontalPodAutoscaler": 2,
                "Ingress": 1,
                "Job": 2,
                "NetworkPolicy": 5,
                "PodDisruptionBudget": 2,
                "PrometheusRule": 1,
                "Service": 2,
                "ServiceAccount": 2,
                "ServiceMonitor": 1,
            },
        ),
    ],
)
def test_what_each_value_set_renders(name: str, expected: dict[str, int]) -> None:
    assert dict(Counter(obj["kind"] for obj in render_set(name))) == expected


@pytest.mark.parametrize("name", SETS)
def test_lint_strict_finds_nothing_beyond_information(name: str) -> None:
    report = helm.lint(
        CHART,
        load_values(VALUE_SETS[name]),
        strict=True,
        namespace=NAMESPACE,
        kube_version="v1.31.0",
    )
    assert report["errors"] == []
    # Severity 1 is information ("icon is recommended"); 2 warning, 3 error.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", SETS)
def test_every_object_is_valid_kubernetes(name: str, version: str) -> None:
    checked = 0
    for obj in render_set(name):
        if obj["kind"] not in OPERATOR_KINDS:
            validate(obj, version)
            checked += 1
    assert checked >= 16


def test_a_wrong_field_is_caught_by_the_validation() -> None:
    """The check above can fail: an unknown field (strict) and a wrong type are errors."""
    deployment = by_kind(render_set("default"), "Deployment")["ivr-vault-webhook"]
    bad = json.loads(json.dumps(deployment))
    bad["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(Exception, match="securityContex"):
        validate(bad, KUBE_VERSIONS[0])


# -- Pod security ---------------------------------------------------------------------

# The restricted profile's volume types (Pod Security Standards).
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: Obj) -> list[str]:
    """The restricted Pod Security Standard (baseline + restricted), plus what the issue
    asks beyond it: a read-only root filesystem and no service-account token by default."""
    found = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            found.append(flag)
    pod_ctx = pod.get("securityContext", {})
    if pod.get("automountServiceAccountToken") is not False:
        found.append("automountServiceAccountToken is not false")
    if pod_ctx.get("sysctls"):
        found.append("sysctls")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: {kinds}")
    for c in containers(pod):
        ctx = c.get("securityContext", {})
        name = c["name"]

        def either(key: str, ctx: Obj = ctx) -> Any:
            return ctx.get(key, pod_ctx.get(key))

        if ctx.get("privileged"):
            found.append(f"{name}: privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation")
        if either("runAsNonRoot") is not True or either("runAsUser") == 0:
            found.append(f"{name}: may run as root")
        if (either("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile")
        caps = ctx.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            found.append(f"{name}: capabilities not dropped")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities added")
        if ctx.get("readOnlyRootFilesystem") is not True:
            found.append(f"{name}: writable root filesystem")
        if any(port.get("hostPort") for port in c.get("ports", [])):
            found.append(f"{name}: hostPort")
        if not c.get("resources", {}).get("requests") or not c["resources"].get("limits"):
            found.append(f"{name}: no resources")
    return found


@pytest.mark.parametrize("name", SETS)
def test_every_pod_meets_the_restricted_pod_security_standard(name: str) -> None:
    pods = list(pod_specs(render_set(name)))
    assert len(pods) == 4  # webhook, backend, bootstrap, migrate
    for obj, pod in pods:
        assert restricted_violations(pod) == [], obj["metadata"]["name"]
    for account in by_kind(render_set(name), "ServiceAccount").values():
        assert account["automountServiceAccountToken"] is False


def test_the_pod_security_check_can_fail() -> None:
    _obj, pod = next(pod_specs(render_set("default")))
    bad = json.loads(json.dumps(pod))
    bad["automountServiceAccountToken"] = True
    bad["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    bad["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert len(restricted_violations(bad)) == 3


# -- Availability -----------------------------------------------------------------------


@pytest.mark.parametrize("name", SETS)
def test_replicas_budgets_autoscaling_and_spread(name: str) -> None:
    objects, values = render_set(name), values_of(name)
    deployments = by_kind(objects, "Deployment")
    budgets = by_kind(objects, "PodDisruptionBudget")
    scalers = by_kind(objects, "HorizontalPodAutoscaler")
    assert set(deployments) == {"ivr-vault-webhook", "ivr-vault-backend"}
    for dname, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        scaler = scalers.get(dname)
        replicas = scaler["spec"]["minReplicas"] if scaler else deployment["spec"]["replicas"]
        assert replicas >= 2, dname
        if scaler:
            assert "replicas" not in deployment["spec"]  # the HPA owns the count
            assert scaler["spec"]["scaleTargetRef"] == {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": dname,
            }
            [metric] = scaler["spec"]["metrics"]
            assert metric["resource"]["name"] == "cpu"
            assert 0 < metric["resource"]["target"]["averageUtilization"] <= 80
            assert scaler["spec"]["maxReplicas"] > scaler["spec"]["minReplicas"]
        budget = budgets[dname]["spec"]
        assert budget["selector"]["matchLabels"].items() <= labels.items()
        assert 1 <= budget["maxUnavailable"] < replicas
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {s["topologyKey"] for s in spread} == {
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
        }
        for constraint in spread:
            assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()
    assert values["webhook"]["autoscaling"]["enabled"] == bool(scalers)


@pytest.mark.parametrize("name", SETS)
def test_probes_and_a_drain_that_matches_the_grace_period(name: str) -> None:
    objects, values = render_set(name), values_of(name)
    drain = values["shutdownDrainSeconds"]
    for deployment in by_kind(objects, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        [c] = pod["containers"]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(drain)]
        # The drain, then uvicorn's 10 s for requests in flight, then 5 s to revoke the
        # token and flush the log: SIGKILL never cuts a call short.
        assert pod["terminationGracePeriodSeconds"] == drain + 15
        assert env_of(c)["SHUTDOWN_DRAIN"] == "0"
        port = c["ports"][0]["containerPort"]
        role = c["name"]
        assert env_of(c)[f"{role.upper()}_PORT"] == str(port)


# -- Service-account login --------------------------------------------------------------


@pytest.mark.parametrize("name", SETS)
def test_pods_log_in_with_a_projected_audience_bound_token(name: str) -> None:
    objects, values = render_set(name), values_of(name)
    roles = Layout.load().roles
    accounts = by_kind(objects, "ServiceAccount")
    bound = {}
    for deployment in by_kind(objects, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        [c] = pod["containers"]
        env = env_of(c)
        assert env["VAULT_AUTH"] == "jwt"
        assert env["VAULT_JWT_ROLE"] in roles
        assert pod["serviceAccountName"] in accounts
        bound[env["VAULT_JWT_ROLE"]] = pod["serviceAccountName"]
        token_dir = str(PurePosixPath(env["VAULT_JWT_TOKEN_PATH"]).parent)
        [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == token_dir]
        [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        [source] = volume["projected"]["sources"]
        token = source["serviceAccountToken"]
        assert token["audience"] == values["vault"]["jwt"]["audience"]
        assert token["path"] == PurePosixPath(env["VAULT_JWT_TOKEN_PATH"]).name
        assert 600 <= token["expirationSeconds"] <= 86400
    assert set(bound) == {"ivr-webhook", "ivr-backend"}
    # Bootstrap binds each role to exactly the account the Deployment runs as.
    bootstrap = by_kind(objects, "Job")["ivr-vault-bootstrap"]
    args = bootstrap["spec"]["template"]["spec"]["containers"][0]["args"]
    pairs = dict(
        a.removeprefix("--jwt-service-account=").split("=", 1)
        for a in args
        if a.startswith("--jwt-service-account=")
    )
    assert pairs == bound
    assert f"--jwt-namespace={NAMESPACE}" in args
    assert f"--jwt-audience={values['vault']['jwt']['audience']}" in args


# -- Jobs, secrets, PostgreSQL roles ----------------------------------------------------


def test_bootstrap_then_migration_as_hooks_with_their_own_database_role() -> None:
    objects, values = render_set("production"), values_of("production")
    jobs = by_kind(objects, "Job")
    weights = {}
    for name, job in jobs.items():
        notes = job["metadata"]["annotations"]
        assert notes["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert "hook-succeeded" in notes["helm.sh/hook-delete-policy"]
        weights[name] = int(notes["helm.sh/hook-weight"])
    assert weights["ivr-vault-bootstrap"] < weights["ivr-vault-migrate"]
    secret_of = {
        name: {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        for name, pod in ((o["metadata"]["name"], p) for o, p in pod_specs(objects))
    }
    pg = values["postgresql"]
    assert pg["migration"]["secret"]["name"] in secret_of["ivr-vault-migrate"]
    assert pg["runtime"]["secret"]["name"] in secret_of["ivr-vault-backend"]
    assert pg["migration"]["secret"]["name"] not in secret_of["ivr-vault-backend"]
    assert not any(s.startswith("ivr-vault-store") for s in secret_of["ivr-vault-webhook"])


@pytest.mark.parametrize("name", SETS)
def test_no_secret_is_inline(name: str) -> None:
    objects = render_set(name)
    assert not [obj for obj in objects if obj["kind"] == "Secret"]
    for obj, pod in pod_specs(objects):
        mounted = {
            m["mountPath"]: m["name"] for c in containers(pod) for m in c.get("volumeMounts", [])
        }
        secret_volumes = {v["name"] for v in pod["volumes"] if "secret" in v}
        for c in containers(pod):
            assert not c.get("envFrom", []) or all("secretRef" not in e for e in c["envFrom"])
            for item in c.get("env", []):
                assert item["name"] not in SECRET_SETTINGS, (obj["metadata"]["name"], item)
                assert "valueFrom" not in item or "secretKeyRef" not in item["valueFrom"]
                if item["name"].removesuffix("_FILE") in SECRET_SETTINGS:
                    directory = str(PurePosixPath(item["value"]).parent)
                    assert mounted.get(directory) in secret_volumes, item
    for config in by_kind(objects, "ConfigMap").values():
        assert not set(config.get("data", {})) & SECRET_SETTINGS


@pytest.mark.parametrize("secret", sorted(SECRET_SETTINGS))
def test_the_schema_refuses_a_secret_in_the_settings(secret: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=secret):
        render({"settings": {secret: "do-not-inline"}})


# -- prometheus-operator objects ----------------------------------------------------------


def test_the_service_monitor_scrapes_both_services_as_the_alerts_expect() -> None:
    objects = render_set("production")
    [monitor] = by_kind(objects, "ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    services = by_kind(objects, "Service")
    selector = monitor["spec"]["selector"]
    chosen = {
        name
        for name, svc in services.items()
        if selector["matchLabels"].items() <= svc["metadata"]["labels"].items()
        and all(
            svc["metadata"]["labels"].get(e["key"]) in e["values"]
            for e in selector["matchExpressions"]
        )
    }
    assert chosen == {"ivr-vault-webhook", "ivr-vault-backend"}
    jobs = {services[name]["metadata"]["labels"][monitor["spec"]["jobLabel"]] for name in chosen}
    assert jobs == {"ivr-webhook", "ivr-backend"}  # monitoring/alerts.yml: job=~"ivr-.*"
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    for name in chosen:
        assert endpoint["port"] in {p["name"] for p in services[name]["spec"]["ports"]}


def test_the_prometheus_rule_carries_monitoring_alerts_yml_unchanged() -> None:
    [rule] = by_kind(render_set("production"), "PrometheusRule").values()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    source = yaml.safe_load((ROOT / "monitoring" / "alerts.yml").read_text(encoding="utf-8"))
    assert rule["spec"]["groups"] == source["groups"]
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert len(rules) >= 5
    for r in rules:
        assert set(r) <= {"alert", "record", "expr", "for", "labels", "annotations"}
        assert r["expr"] and ("alert" in r) != ("record" in r)
        # Helm did not eat the rules' own template expressions.
        for text in r.get("annotations", {}).values():
            assert "<no value>" not in text


def test_monitoring_is_off_unless_asked() -> None:
    kinds = {obj["kind"] for obj in render_set("default")}
    assert not kinds & OPERATOR_KINDS
    assert "Ingress" not in kinds


def test_the_ingress_routes_voice_only() -> None:
    [ingress] = by_kind(render_set("production"), "Ingress").values()
    [rule] = ingress["spec"]["rules"]
    assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [("/voice", "Prefix")]
    assert ingress["spec"]["tls"][0]["secretName"]


# -- The chart and the program agree ------------------------------------------------------


def pod_environment(objects: list[Obj], container: Obj, tmp_path: Any) -> dict[str, str]:
    """The container's environment as Kubernetes would give it: the ConfigMaps it names
    (envFrom), then its own env; every ``*_FILE`` pointed at a stand-in file."""
    configs = by_kind(objects, "ConfigMap")
    environ: dict[str, str] = {}
    for source in container.get("envFrom", []):
        environ.update(configs[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        environ[item["name"]] = item["value"]
    for name in [n for n in environ if n.endswith("_FILE")]:
        stand_in = tmp_path / name
        stand_in.write_text(
            "postgresql://ivr_backend:pw@db:5432/ivr"
            if name == "STORE_URL_FILE"
            else "stand-in-secret",
            encoding="utf-8",
        )
        environ[name] = str(stand_in)
    return environ


@pytest.mark.parametrize("name", SETS)
def test_each_pods_arguments_and_environment_are_what_the_program_accepts(
    name: str, tmp_path: Any
) -> None:
    """Every container's args parse with the real command line, and each service's
    environment is a configuration it starts with (Settings.require), logging in by JWT."""
    from service.cli import build_parser

    objects = render_set(name)
    parser = build_parser()
    for obj, pod in pod_specs(objects):
        [c] = pod["containers"]
        args = parser.parse_args(c["args"])
        environ = pod_environment(objects, c, tmp_path)
        settings = Settings.from_environ(environ)
        if args.command == "serve":
            settings.require(args.role)
            assert settings.vault_auth == "jwt" and settings.vault_role_id is None
            assert settings.vault_jwt_role == f"ivr-{args.role}"
            if args.role == "backend":
                assert settings.store.engine == "postgresql"
        elif args.command == "bootstrap":
            assert settings.vault_token is not None
            assert args.profile == "prod" and len(args.jwt_service_account) == 2
        else:
            assert c["args"] == ["store", "migrate"], obj["metadata"]["name"]
            assert settings.store.engine == "postgresql"


def test_the_resource_arithmetic_quotes_the_benchmark() -> None:
    """values.yaml sizes the pods from bench/RESULTS.md's per-process CPU; when a new run
    changes those figures, this fails until the comment (and the sizing) follow."""
    results = (ROOT / "bench" / "RESULTS.md").read_text(encoding="utf-8")
    comment = (CHART / "values.yaml").read_text(encoding="utf-8")
    [line] = [x for x in results.splitlines() if x.startswith("Where the HA topology's CPU")]
    cpu = {name: float(ms) for name, ms in re.findall(r"(\w+-\d) (\d+\.\d+)", line)}
    for role in ("webhook", "backend"):
        parts = [cpu[f"{role}-1"], cpu[f"{role}-2"]]
        total = sum(parts)
        quoted = f"{role} {parts[0]:.2f} + {parts[1]:.2f} = {total:.2f} ms per webhook request"
        assert quoted in comment, quoted
        # 250m requested; four webhook requests a call (the account, card and PIN steps
        # after the menu: bench/load.py's REQUESTS_PER_CALL)
        calls_per_s = 250 / (REQUESTS_PER_CALL * total)
        assert f"{REQUESTS_PER_CALL} requests a call" in comment
        assert f"250 / {REQUESTS_PER_CALL * total:.2f} = {calls_per_s:.0f}" in comment
