"""Prometheus metrics, one registry per process, created in the app's lifespan.

Labels are closed vocabularies (route templates, outcome words, error kinds); no label
or value ever carries caller data, a CallSid or a ciphertext.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.errors import VaultError

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Outcomes are words our handlers choose; anything else (or nothing) becomes a status class.
_OUTCOME = re.compile(r"[a-z][a-z_]{0,39}")


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "ivr_requests_total",
            "HTTP requests by route and outcome",
            ["route", "outcome"],
            registry=r,
        )
        self.signature_failures = Counter(
            "ivr_signature_failures_total",
            "Requests refused for a missing or invalid X-Twilio-Signature",
            registry=r,
        )
        self.transit_calls = Counter(
            "ivr_transit_http_calls_total",
            "HTTP calls made to Vault Transit",
            ["operation"],
            registry=r,
        )
        self.transit_items = Counter(
            "ivr_transit_items_total",
            "Items (plaintexts, ciphertexts, inputs) sent to Transit",
            ["operation"],
            registry=r,
        )
        self.transit_latency = Histogram(
            "ivr_transit_latency_seconds",
            "Latency of one Transit HTTP call",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.transit_batch_size = Histogram(
            "ivr_transit_batch_size",
            "Items per Transit HTTP call",
            ["operation"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.vault_errors = Counter(
            "ivr_vault_errors_total", "Vault errors by kind", ["kind"], registry=r
        )
        self.lookups = Counter(
            "ivr_lookups_total", "Account lookups by outcome", ["outcome"], registry=r
        )
        self.wrong_pins = Counter(
            "ivr_wrong_pins_total", "Wrong PINs entered for a known card", registry=r
        )
        # kind: card (a temporary lock), card_hard (locked until an operator unlocks it),
        # caller (one caller number cut off after failures across cards).
        self.lockouts = Counter("ivr_lockouts_total", "Lockouts by kind", ["kind"], registry=r)
        # Readiness as the last /readyz found it (compose's healthcheck and a Kubernetes
        # readiness probe ask every few seconds): what decides traffic is what is reported,
        # and a scrape never calls Vault. The timestamp shows when nobody asks any more.
        self.ready = Gauge(
            "ivr_ready",
            "1 when the last /readyz found this dependency usable, else 0",
            ["dependency"],
            registry=r,
        )
        # A counter with a closed set of labels exports each at 0 from the start, so that
        # rate() and the alert rules see a series before the first event (Prometheus's
        # instrumentation guide, "Avoid missing metrics"). The backend adds its own sets.
        self.initialise(self.vault_errors, vault_error_kinds())
        self.ready_checked = Gauge(
            "ivr_ready_checked_timestamp_seconds", "Unix time of the last /readyz", registry=r
        )
        self._dependencies: set[str] = set()

    @staticmethod
    def initialise(counter: Counter, labels: Iterable[str]) -> None:
        """Export ``counter`` at 0 for each of ``labels`` (its one label's closed set)."""
        for label in labels:
            counter.labels(label)

    def record_readiness(self, checks: Mapping[str, bool]) -> None:
        """What one /readyz found. A dependency seen before but not confirmed now (the
        check timed out, or an earlier one failed first) is 0: not known to be usable."""
        self._dependencies |= set(checks)
        for dependency in self._dependencies:
            self.ready.labels(dependency).set(1 if checks.get(dependency) else 0)
        self.ready_checked.set_to_current_time()

    def count_request(
        self, route: str | None, status: int, annotations: Mapping[str, object]
    ) -> None:
        """AccessLogMiddleware's ``on_complete``. A path that matched no route is counted as
        ``unmatched``: raw paths are client-chosen and would make labels unbounded."""
        outcome = annotations.get("outcome")
        if not (isinstance(outcome, str) and _OUTCOME.fullmatch(outcome)):
            outcome = "ok" if status < 400 else f"http_{status // 100}xx"
        self.requests.labels(route or "unmatched", outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def vault_error_kinds() -> list[str]:
    """The ``kind`` of every Vault error (service/errors.py): the closed label set of
    ``ivr_vault_errors_total``."""
    kinds, todo = set(), [VaultError]
    while todo:
        cls = todo.pop()
        kinds.add(cls.kind)
        todo += cls.__subclasses__()
    return sorted(kinds)
