"""monitoring/: the alert rules pass promtool's check and its unit tests (monitoring/tests/),
every alert has a test that fires it, and every query of the rules and of the Grafana
dashboard reads a metric that the real services' /metrics export."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import yaml

from tests.support.promql import SYNTHETIC, exported_names, metric_names
from tests.support.repo import ROOT
from tests.support.stack import Stack
from tests.support.tools import require

MONITORING = ROOT / "monitoring"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("promtool"), *args],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def alert_rules() -> list[dict[str, object]]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", "tests/alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_test_fails_when_a_rule_changes(tmp_path: Path) -> None:
    """The unit tests are not blind: the spray threshold raised from 10 to 20 per minute
    makes them fail."""
    rules = (MONITORING / "alerts.yml").read_text()
    assert "* 60 > 10" in rules
    work = tmp_path / "monitoring"
    (work / "tests").mkdir(parents=True)
    (work / "alerts.yml").write_text(rules.replace("* 60 > 10", "* 60 > 20"))
    shutil.copy(MONITORING / "tests" / "alerts_test.yml", work / "tests")
    done = subprocess.run(
        [require("promtool"), "test", "rules", "tests/alerts_test.yml"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "IvrWrongPinSpray" in done.stdout + done.stderr


def test_every_alert_has_a_test_that_fires_it() -> None:
    tests = yaml.safe_load((MONITORING / "tests" / "alerts_test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    names = {str(rule["alert"]) for rule in alert_rules()}
    assert names == fired
    assert names - {"IvrServiceDown"} <= quiet  # and one where it stays quiet


def dashboard_queries() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_dashboard_covers_every_alerted_series() -> None:
    shown = set().union(*(metric_names(q) for q in dashboard_queries()))
    alerted = set().union(*(metric_names(str(rule["expr"])) for rule in alert_rules()))
    assert alerted <= shown


def test_every_query_names_an_exported_metric(stack: Stack) -> None:
    exported = set(SYNTHETIC)
    for url in (stack.webhook.url, stack.backend.url):
        httpx.get(f"{url}/readyz", timeout=10)  # ivr_ready gets its samples
        exported |= exported_names(httpx.get(f"{url}/metrics", timeout=10).text)
    queries = dashboard_queries() + [str(rule["expr"]) for rule in alert_rules()]
    assert len(queries) > 15
    unknown = {q: metric_names(q) - exported for q in queries if metric_names(q) - exported}
    assert unknown == {}
    assert all(metric_names(q) for q in queries)  # each query reads at least one metric
