"""A/B: the working tree's services against another revision's (or other settings), in one
run, alternating, on one Vault. Each change of a performance round is kept only if it
measures better here; the tables land in bench/ab/NAME.md and RESULTS.md quotes them.

    python -m bench.ab NAME [--rev REV | --src DIR] [--env-a K=V ...] [--env-b K=V ...]

Variant A is the working tree (with ``--env-a``), B is ``git archive REV`` of this repo,
or the ``service`` package under DIR, or the working tree too (with ``--env-b``). Each
variant gets its own backend and webhook; both measure the card step (c=32) and whole
calls (c=16) with pre-signed requests, every answer checked, runs alternating A B A B ...;
medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench import load, stack
from service.devtools.launcher import dev_output_env

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass
class Variant:
    name: str
    pair: stack.Pair
    card: list[load.WrkResult] = field(default_factory=list)
    call: list[load.WrkResult] = field(default_factory=list)
    cpu: dict[str, list[float]] = field(default_factory=dict)  # "card webhook" -> ms/request
    transit: list[float] = field(default_factory=list)  # whole call, Transit calls/request


def _source(rev: str, into: Path) -> Path:
    """``git archive REV`` unpacked: that revision's service package, nothing else."""
    into.mkdir(parents=True, exist_ok=True)
    archive = into / "src.tar"
    subprocess.run(
        ["git", "-C", str(ROOT), "archive", "-o", str(archive), rev, "service"], check=True
    )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def _variant(
    bench: stack.Bench,
    exits: ExitStack,
    name: str,
    env: list[str],
    src: Path | None,
    *,
    terminal: bool,
) -> Variant:
    extra = dict(kv.split("=", 1) for kv in env)
    if src is not None:
        # PYTHONSAFEPATH: the current directory (this tree) must not come before PYTHONPATH.
        extra.update(PYTHONPATH=str(src), PYTHONSAFEPATH="1")
    return Variant(name, stack.start_pair(bench, exits, f"ab-{name}", extra, terminal=terminal))


def _measure(
    bench: stack.Bench, v: Variant, kind: str, requests_file: Path, connections: int, seconds: int
) -> None:
    pids = {**v.pair.pids(), **({"vault": bench.vault.process.pid} if bench.vault.process else {})}
    before = {n: stack.cpu_seconds(p) for n, p in pids.items()}
    urls = (v.pair.webhook.url, v.pair.backend.url)
    calls_before, _ = stack.transit_totals(*urls)
    result = load.run_wrk(
        v.pair.webhook.url, requests_file, connections=connections, seconds=seconds
    )
    calls_after, _ = stack.transit_totals(*urls)
    for n, p in pids.items():
        v.cpu.setdefault(f"{kind} {n}", []).append(
            (stack.cpu_seconds(p) - before[n]) * 1000 / max(result.requests, 1)
        )
    (v.card if kind == "card" else v.call).append(result)
    if kind == "call":
        v.transit.append((calls_after - calls_before) / max(result.requests, 1))


def _card_file(bench: stack.Bench, work: Path, v: Variant, seconds: int) -> Path:
    return load.write_requests(
        work / f"card-{v.name}.txt",
        load.card_requests(6000 * seconds + 1000),
        base_url=v.pair.webhook.url,
        auth_token=bench.twilio_token,
    )


def _call_file(bench: stack.Bench, work: Path, v: Variant, seconds: int) -> Path:
    sids = [load.new_call_sid() for _ in range(1500 * seconds + 500)]
    return load.write_requests(
        work / f"calls-{v.name}.txt",
        load.call_requests(bench.calls(sids)),
        base_url=v.pair.webhook.url,
        auth_token=bench.twilio_token,
    )


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _table(
    name: str,
    variants: list[Variant],
    labels: dict[str, str],
    loadavg: tuple[float, float],
    runs: int,
    make_run: bool,
) -> str:
    rows: list[tuple[str, Callable[[Variant], float], str]] = [
        ("card c=32 req/s", lambda v: _med([r.rps for r in v.card]), "{:.0f}"),
        ("card c=32 p99 ms", lambda v: _med([r.p99_ms for r in v.card]), "{:.1f}"),
        ("card c=32 webhook CPU ms/request", lambda v: _med(v.cpu["card webhook"]), "{:.3f}"),
        ("call c=16 req/s", lambda v: _med([r.rps for r in v.call]), "{:.0f}"),
        ("call c=16 p50 ms", lambda v: _med([r.p50_ms for r in v.call]), "{:.1f}"),
        ("call c=16 p99 ms", lambda v: _med([r.p99_ms for r in v.call]), "{:.1f}"),
        ("call Transit calls/request", lambda v: _med(v.transit), "{:.3f}"),
        *[
            (f"call CPU ms/request, {p}", lambda v, p=p: _med(v.cpu[f"call {p}"]), "{:.3f}")
            for p in ("webhook", "backend", "vault")
        ],
        (
            "call CPU ms/request, all",
            lambda v: sum(_med(v.cpu[f"call {p}"]) for p in ("webhook", "backend", "vault")),
            "{:.3f}",
        ),
    ]
    bad = sum(r.bad + r.errors for v in variants for r in (*v.card, *v.call))
    out = [
        f"### A/B: {name}",
        "",
        f"`python -m bench.ab {name}{' --make-run' if make_run else ''}`: medians of "
        f"{runs} alternating runs per variant, fresh pre-signed requests for each; "
        f"1-minute load average {loadavg[0]:.1f} before, {loadavg[1]:.1f} after; "
        f"{bad} answers not as a working service would give.",
        "",
        "| figure | " + " | ".join(f"{labels[v.name]}" for v in variants) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for label, get, fmt in rows:
        out.append(f"| {label} | " + " | ".join(fmt.format(get(v)) for v in variants) + " |")
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab")
    parser.add_argument("name")
    parser.add_argument("--rev", help="git revision for variant B (default: working tree)")
    parser.add_argument("--src", help="a directory holding variant B's service package")
    parser.add_argument("--src-a", help="variant A's service package instead of this tree")
    parser.add_argument("--label-a", default="A: this tree")
    parser.add_argument("--label-b", default="B")
    parser.add_argument("--env-a", action="append", default=[], metavar="K=V")
    parser.add_argument("--env-b", action="append", default=[], metavar="K=V")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--make-run",
        action="store_true",
        help="both variants as make run runs them (console, on a terminal)",
    )
    parser.add_argument("--seconds", type=int, default=4)
    args = parser.parse_args()
    work = HERE / ".work" / "ab"
    loadavg_before = os.getloadavg()[0]
    with ExitStack() as exits:
        bench = stack.start(work / "run", exits)
        src = (
            _source(args.rev, work / "rev")
            if args.rev
            else (Path(args.src).resolve() if args.src else None)
        )
        dev = [f"{k}={v}" for k, v in dev_output_env({}).items()] if args.make_run else []
        src_a = Path(args.src_a).resolve() if args.src_a else None
        variants = [
            _variant(bench, exits, "a", [*dev, *args.env_a], src_a, terminal=args.make_run),
            _variant(bench, exits, "b", [*dev, *args.env_b], src, terminal=args.make_run),
        ]
        labels = {"a": args.label_a, "b": args.label_b}
        for v in variants:  # warm up
            load.run_wrk(
                v.pair.webhook.url, _card_file(bench, work, v, 2), connections=8, seconds=2
            )
        for _ in range(args.runs):
            # Fresh requests for every run, as the bench does: a replayed CallSid would be
            # answered from the backend's remembered answers, without Transit.
            for v in variants:
                _measure(
                    bench, v, "card", _card_file(bench, work, v, args.seconds), 32, args.seconds
                )
            for v in variants:
                _measure(
                    bench, v, "call", _call_file(bench, work, v, args.seconds), 16, args.seconds
                )
        table = _table(
            args.name,
            variants,
            labels,
            (loadavg_before, os.getloadavg()[0]),
            args.runs,
            args.make_run,
        )
    out = HERE / "ab" / f"{args.name}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(table, encoding="utf-8")
    print(table)
    print(f"bench.ab: wrote {out} at {time.strftime('%H:%M')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
