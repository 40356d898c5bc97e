"""Readiness as a metric: what the last /readyz found, per dependency, and when."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from service.web.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name.startswith("ivr_ready"):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_each_dependency_is_one_or_zero_and_a_missing_one_is_zero() -> None:
    metrics = Metrics()
    assert samples(metrics) == {("ivr_ready_checked_timestamp_seconds", ()): 0.0}
    before = time.time()
    metrics.record_readiness({"vault": True, "ivr-lookup": True})
    got = samples(metrics)
    assert got[("ivr_ready", (("dependency", "vault"),))] == 1.0
    assert got[("ivr_ready", (("dependency", "ivr-lookup"),))] == 1.0
    assert got[("ivr_ready_checked_timestamp_seconds", ())] >= before
    metrics.record_readiness({"vault": False})  # Vault away: the canary was not checked
    got = samples(metrics)
    assert got[("ivr_ready", (("dependency", "vault"),))] == 0.0
    assert got[("ivr_ready", (("dependency", "ivr-lookup"),))] == 0.0
    metrics.record_readiness({})  # /readyz timed out: nothing confirmed
    assert {v for (name, _), v in samples(metrics).items() if name == "ivr_ready"} == {0.0}
