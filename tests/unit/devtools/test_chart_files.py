"""The chart's generated files (service/devtools/chart_files.py) are up to date, and the
schema says what the Settings declarations say."""

from __future__ import annotations

import dataclasses
import json

from service.devtools import chart_files
from service.settings import Settings, env_name, spec


def test_the_generated_chart_files_are_current() -> None:
    assert chart_files.stale() == [], (
        "stale chart files: run .venv/bin/python -m service.devtools.chart_files --write"
    )


def test_settings_in_the_schema_are_the_declared_ones_less_secrets_and_the_charts_own() -> None:
    schema = json.loads(chart_files.render_schema())
    settable = schema["properties"]["settings"]["properties"]
    declared = {env_name(f): spec(f) for f in dataclasses.fields(Settings)}
    assert set(settable) == {
        name for name, s in declared.items() if not s.secret and name not in chart_files.MANAGED
    }
    assert set(declared) >= chart_files.MANAGED  # no stale name in the chart's own list
    assert schema["properties"]["settings"]["additionalProperties"] is False
    assert settable["LOG_FORMAT"]["pattern"] == "^(?i:json|console)$"
    assert declared["MAX_ATTEMPTS"].meaning in settable["MAX_ATTEMPTS"]["description"]


def test_the_shape_of_values_yaml_is_closed_where_it_is_written_out() -> None:
    schema = json.loads(chart_files.render_schema())
    assert schema["additionalProperties"] is False
    webhook = schema["properties"]["webhook"]
    assert webhook["properties"]["replicas"] == {"type": "integer"}
    assert webhook["properties"]["resources"] == {"type": "object"}  # Kubernetes' own keys
    assert webhook["properties"]["nodeSelector"] == {"type": "object"}  # empty: free


def test_the_alerts_copy_is_the_source_with_a_header() -> None:
    copy = chart_files.render_alerts()
    assert copy.endswith(chart_files.ALERTS.read_text(encoding="utf-8"))
    assert copy.startswith("# Generated from monitoring/alerts.yml")
