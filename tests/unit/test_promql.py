"""The PromQL reading that checks the dashboard and the alert rules (tests/support/promql.py):
it must find every metric a query reads and nothing else, or that check proves nothing."""

from __future__ import annotations

import pytest

from tests.support.promql import exported_names, metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sum(rate(ivr_wrong_pins_total[5m])) * 60 > 10", {"ivr_wrong_pins_total"}),
        (
            'sum by (kind) (increase(ivr_lockouts_total{kind=~"card|card_hard"}[15m])) > 5',
            {"ivr_lockouts_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (job, operation, le) "
            "(rate(ivr_transit_latency_seconds_bucket[5m]))) > 0.25",
            {"ivr_transit_latency_seconds_bucket"},
        ),
        (
            "time() - ivr_ready_checked_timestamp_seconds > 120",
            {"ivr_ready_checked_timestamp_seconds"},
        ),
        ('up{job=~"ivr-.*", instance!="a{b}"} == 0', {"up"}),
        ("a_sum / on (operation) group_left b_count unless c offset 5m", {"a_sum", "b_count", "c"}),
        ('label_replace(x, "dst", "$1", "src", "(.*)")', {"x"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_exported_names_from_type_lines_and_samples() -> None:
    page = (
        "# HELP h Latency\n# TYPE h histogram\n"
        '# HELP c_total Things\n# TYPE c_total counter\nc_total{kind="x"} 1.0\n'
        "# TYPE g gauge\n"
    )
    assert exported_names(page) == {"h", "h_bucket", "h_sum", "h_count", "c_total", "g"}
