"""RESULTS.md's headline table: issue #21's targets (performance round 3), judged side by side.

The issue wants its relative targets measured against main before it (cf3f7f8) in one run,
so "before" and "after" come from one A/B run, ``python -m bench.ab round3 --rev cf3f7f8``
(bench/ab/round3.md: A = the tree, B = cf3f7f8), and a relative target is judged on A ÷ B
of that run: against an earlier run's figures it would compare two machine loads (this
round's A/B runs saw 1-minute load averages from 3 to 17). An absolute target is judged on
the bench run's own figure ("measured"). Without round3.md the relative targets have no
verdict; the absolute ones still do.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

AB_RUN = Path(__file__).resolve().parent / "ab" / "round3.md"
BEFORE_REV = "cf3f7f8"  # main when issue #21 began: variant B of bench/ab/round3.md
CALL_P50_MS = 8.0  # whole call p50 per webhook request, c=16 (the Why bullet's arithmetic)


@dataclass(frozen=True)
class AbRun:
    """The first figure table of a ``python -m bench.ab`` file: A's and B's figures by row."""

    labels: tuple[str, str]
    a: dict[str, float]
    b: dict[str, float]
    loadavg: tuple[float, float] | None


def parse_ab(text: str) -> AbRun | None:
    """The file's first ``| figure | A | B |`` table (later tables are other runs of the same
    A/B, quoted below it); None if there is none. A cell that is not a number is left out."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("| figure |")), None)
    if start is None:
        return None
    header = [c.strip() for c in lines[start].strip().strip("|").split("|")]
    if len(header) < 3:
        return None
    a: dict[str, float] = {}
    b: dict[str, float] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3:
            continue
        for column, cell in ((a, cells[1]), (b, cells[2])):
            with contextlib.suppress(ValueError):
                column[cells[0]] = float(cell)
    found = re.search(r"load average ([\d.]+) before, ([\d.]+) after", "\n".join(lines[:start]))
    loadavg = (float(found[1]), float(found[2])) if found else None
    return AbRun((header[1], header[2]), a, b, loadavg)


def read_ab(path: Path | None = None) -> AbRun | None:
    """bench/ab/round3.md's figures (or ``path``'s); None if the file is not there."""
    path = path or AB_RUN
    return parse_ab(path.read_text(encoding="utf-8")) if path.exists() else None


@dataclass(frozen=True)
class Target:
    label: str
    wanted: str
    key: str  # the bench run's figure: a key of report.Summary.values
    unit: str  # "{:.3f} ms" and the like
    row: str | None = None  # bench.ab's row of the same figure; None: an A/B does not measure it
    relative: float | None = None  # wanted A ÷ B of the A/B run
    absolute: float | None = None  # wanted figure of the bench run
    higher_is_better: bool = False

    def meets(self, value: float, bound: float) -> bool:
        return value >= bound if self.higher_is_better else value <= bound


# Issue #21's table, in its order.
ROUND3 = (
    Target(
        "webhook CPU per card request, c=32",
        "-35 %",
        "card_cpu",
        "{:.3f} ms",
        row="card c=32 webhook CPU ms/request",
        relative=0.65,
    ),
    Target(
        "card step req/s, c=32",
        "≥ 1.3x",
        "card_rps",
        "{:.0f}",
        row="card c=32 req/s",
        relative=1.3,
        higher_is_better=True,
    ),
    Target(
        "whole call CPU per webhook request, all processes, c=16",
        "-25 %, ≤ 0.9 ms",
        "cpu",
        "{:.3f} ms",
        row="call CPU ms/request, all",
        relative=0.75,
        absolute=0.9,
    ),
    Target(
        "whole call p50 per webhook request, c=16",
        "≤ 8 ms",
        "call_p50",
        "{:.1f} ms",
        row="call c=16 p50 ms",
        absolute=CALL_P50_MS,
    ),
    Target(
        "whole call p99 per webhook request, c=16",
        "≤ 30 ms",
        "call_p99",
        "{:.1f} ms",
        row="call c=16 p99 ms",
        absolute=30.0,
    ),
    Target(
        "card step Vault ÷ in-process baseline, c=32",
        "≥ 0.88",
        "ratio",
        "{:.2f}",
        absolute=0.88,
        higher_is_better=True,
    ),
)
# The earlier rounds' targets that no round-3 row replaces, still held to.
EARLIER = (
    Target(
        "card step p99, c=32 (round 2)",
        "≤ 20 ms",
        "card_p99",
        "{:.1f} ms",
        row="card c=32 p99 ms",
        absolute=20.0,
    ),
    Target(
        "Transit HTTP calls per webhook request, whole call (round 2)",
        "≤ 0.3",
        "transit",
        "{:.3f}",
        row="call Transit calls/request",
        absolute=0.3,
    ),
    Target(
        "`make run`'s card step ÷ the bench's, c=32 (round 2)",
        "≥ 0.85",
        "make_run",
        "{:.2f}",
        absolute=0.85,
        higher_is_better=True,
    ),
)
BY_KEY = {t.key: t for t in (*ROUND3, *EARLIER)}


def absolute_verdict(t: Target, value: float) -> str:
    assert t.absolute is not None
    if t.meets(value, t.absolute):
        return "holds"
    return f"**misses** by {abs(value / t.absolute - 1) * 100:.0f} %"


def verdict(key: str, value: float) -> str:
    """The bench run's figure against its absolute target (the Why bullets' verdicts)."""
    t = BY_KEY[key]
    return absolute_verdict(t, value) if t.absolute is not None else ""


def _change(t: Target, ratio: float) -> str:
    return f"{ratio:.2f}x" if t.higher_is_better else f"{(ratio - 1) * 100:+.1f} %"


def _relative_verdict(t: Target, ratio: float) -> str:
    assert t.relative is not None
    if t.meets(ratio, t.relative):
        return "holds"
    if t.higher_is_better:  # 1.10x of 1.3x wanted: 15 % short
        return f"**misses** by {(1 - ratio / t.relative) * 100:.0f} %"
    return f"**misses** by {(ratio - t.relative) * 100:.1f} points"  # -30 % of -35 % wanted


def judge(t: Target, value: float, ab: AbRun | None) -> str:
    """Relative targets on the A/B run's A ÷ B, absolute ones on this run's figure."""
    parts: list[str] = []
    if t.relative is not None:
        if ab is None or t.row not in ab.a or t.row not in ab.b:
            parts.append("no A/B run to judge the change on")
        else:
            ratio = ab.a[t.row] / ab.b[t.row]
            parts.append(f"{_change(t, ratio)} side by side: {_relative_verdict(t, ratio)}")
    if t.absolute is not None:
        text = absolute_verdict(t, value)
        parts.append(f"{t.unit.format(value)} this run: {text}" if t.relative is not None else text)
    return "; ".join(parts)


def _cell(t: Target, column: dict[str, float] | None) -> str:
    if column is None or t.row is None or t.row not in column:
        return "-"
    return t.unit.format(column[t.row])


def table(values: dict[str, float], ab: AbRun | None) -> list[str]:
    """The headline table: issue #21's targets, then the earlier rounds' still held."""
    if ab is None:
        source = (
            f"no side-by-side run: bench/ab/{AB_RUN.name} is missing "
            f"(`python -m bench.ab {AB_RUN.stem} --rev {BEFORE_REV}` makes it), so the "
            "relative targets have no verdict"
        )
    else:
        load = ""
        if ab.loadavg:
            load = f", load average {ab.loadavg[0]:.1f} before, {ab.loadavg[1]:.1f} after"
        source = (
            f"before and after from one side-by-side run, bench/ab/{AB_RUN.name} "
            f'(its columns "{ab.labels[1]}" and "{ab.labels[0]}"{load})'
        )
    header = (
        f"Targets of issue #21 (round 3) against main before it ({BEFORE_REV}): {source}. "
        "A relative target (-35 %, ≥ 1.3x, -25 %) is judged on after ÷ before of that "
        "one A/B run, an absolute one (ms, a ratio) on this run's own figure, measured."
    )

    def row(t: Target) -> str:
        value = values[t.key]
        before, after = (ab.b, ab.a) if ab else (None, None)
        return (
            f"| {t.label} | {t.wanted} | {_cell(t, before)} | {_cell(t, after)} | "
            f"{t.unit.format(value)} | {judge(t, value, ab)} |"
        )

    return [
        header,
        "",
        f"| target | wanted | before ({BEFORE_REV}, B) | after, same A/B run (A) "
        "| measured, this run | |",
        "|---|---|---|---|---|---|",
        *[row(t) for t in ROUND3],
        *[row(t) for t in EARLIER],
    ]
