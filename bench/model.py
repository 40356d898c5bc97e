"""What a bench run plans and measures, shared by the run (bench/__main__.py), its HA
section (bench/ha.py) and the report (bench/report.py), none of which imports another's
entry point."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench import load

HERE = Path(__file__).resolve().parent

CARD_C, CALL_C = 32, 16  # the connections of the headline card and call figures
CLIENT_SIDE = "client-side failover (BACKEND_URL: both backends)"
BALANCER = "Caddy in front of the backends (BACKEND_URL: the balancer)"


@dataclass(frozen=True)
class Plan:
    quick: bool
    runs: int
    seconds: float
    card_concurrency: tuple[int, ...]
    call_concurrency: tuple[int, ...]
    out_dir: Path
    ha: bool = True

    @classmethod
    def from_environ(cls) -> Plan:
        ha = os.environ.get("BENCH_HA", "1") != "0"
        if os.environ.get("BENCH_QUICK"):
            return cls(True, 3, 3, (32,), (16,), HERE / ".work" / "quick", ha)
        return cls(False, 5, 5, (1, 4, 16, 32, 64), (4, 16, 32), HERE, ha)


@dataclass
class Point:
    """The median run (by throughput) of several, and all runs for the record."""

    runs: list[load.WrkResult]
    cpu: dict[str, list[float]] = field(default_factory=dict)  # process -> CPU ms/request
    transit: list[float] = field(default_factory=list)  # Transit HTTP calls per request
    batch: list[float] = field(default_factory=list)  # items per Transit HTTP call

    @property
    def median(self) -> load.WrkResult:
        return sorted(self.runs, key=lambda r: r.rps)[len(self.runs) // 2]

    def med(self, attr: str) -> float:
        return statistics.median(float(getattr(r, attr)) for r in self.runs)
