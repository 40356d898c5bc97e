"""RESULTS.md and chart.png from one bench run, and the one-line summary."""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench import clients, headline
from bench.load import REQUESTS_PER_CALL
from bench.model import BALANCER, CALL_C, CARD_C, CLIENT_SIDE, Point

if TYPE_CHECKING:
    from bench.clients import ClientFigures
    from bench.ha import HaFigures

MAKE_RUN = "make run"  # the services as the dev launcher runs them
NO_LINGER = "TRANSIT_LINGER=0"
CALL_PROCS = ("webhook", "backend", "vault")
BATCH_NOTE = f"{clients.BATCH} items each, {clients.IN_FLIGHT} calls in flight, on uvloop"


@dataclass
class Summary:
    card: dict[str, dict[int, Point]]
    calls: dict[int, Point]
    server: dict[str, Point]
    rss_rest: dict[str, float]
    rss_load: dict[str, float]
    quick: bool
    elapsed: float
    loadavg: tuple[float, float]
    pairs: dict[str, Point]  # whole calls c=16 on the make-run and no-linger pairs
    clients: dict[str, ClientFigures]
    ha: HaFigures | None = None  # make run-ha's topology (bench/ha.py)

    @classmethod
    def build(
        cls,
        card: dict[str, dict[int, Point]],
        calls: dict[int, Point],
        server: dict[str, Point],
        rss_rest: dict[str, float],
        rss_load: dict[str, float],
        quick: bool,
        *,
        elapsed: float,
        loadavg: tuple[float, float],
        pairs: dict[str, Point],
        clients: dict[str, ClientFigures],
        ha: HaFigures | None = None,
    ) -> Summary:
        return cls(
            card, calls, server, rss_rest, rss_load, quick, elapsed, loadavg, pairs, clients, ha
        )

    @property
    def values(self) -> dict[str, float]:
        vault, base = self.card["vault"][CARD_C], self.card["baseline"][CARD_C]
        call = self.calls[CALL_C]
        return {
            "ratio": paired_ratio(vault, base),
            "card_p99": vault.med("p99_ms"),
            "call_p50": call.med("p50_ms"),
            "call_p99": call.med("p99_ms"),
            "transit": statistics.median(call.transit),
            "cpu": call_cpu(call),
            "make_run": paired_ratio(self.card[MAKE_RUN][CARD_C], vault),
            "card_cpu": _cpu(vault, "webhook"),
            "card_rps": vault.med("rps"),
        }

    def line(self) -> str:
        v = self.values
        return (
            f"bench: ratio {v['ratio']:.2f} card p99 {v['card_p99']:.1f} ms "
            f"call p50 {v['call_p50']:.1f} ms call p99 {v['call_p99']:.1f} ms "
            f"transit calls/request {v['transit']:.3f} cpu/request {v['cpu']:.2f} ms"
        )


def call_cpu(point: Point) -> float:
    """CPU per webhook request over all processes of a whole call (webhook, backend,
    Vault): the sum of each process's median."""
    return sum(statistics.median(point.cpu[p]) for p in CALL_PROCS if p in point.cpu)


def paired_ratio(vault: Point, base: Point) -> float:
    """Median of run-by-run ratios. Vault and baseline runs alternate, so each pair saw
    about the same background load; on a shared machine that is steadier than a ratio of
    two medians."""
    return statistics.median(v.rps / b.rps for v, b in zip(vault.runs, base.runs, strict=True))


def _runs_ok(points: list[Point]) -> str:
    runs = [r for p in points for r in p.runs]
    bad = sum(r.bad + r.errors for r in runs)
    wrapped = sum(r.wrapped for r in runs)
    total = sum(r.requests for r in runs)
    return (
        f"{total} requests measured, {bad} not answered as a working service would "
        f"(non-200, error or fallback TwiML), {wrapped} runs reused a pre-signed request"
    )


CPU_PROCS = ("webhook", "baseline", "backend", "vault")
# Names of the server-settings variants (bench/__main__.py).
BASE_1W = "uvloop + httptools, 1 worker (chosen)"
BASE_H11 = "asyncio + h11, 1 worker"
BASE_2W = "uvloop + httptools, 2 workers"
VAULT_1W = "Vault webhook, 1 worker (chosen)"
VAULT_2W = "Vault webhook, 2 workers"


def _cpu_row(label: str, point: Point) -> str:
    cells = [f"{statistics.median(point.cpu[p]):.2f}" if p in point.cpu else "-" for p in CPU_PROCS]
    return f"| {label} | " + " | ".join(cells) + " |"


def _cpu_side_by_side(ab: headline.AbRun | None) -> list[str]:
    """The whole call's rows of the round's A/B run (bench/ab/round3.md), if it ran."""
    if ab is None:
        return []
    out = []
    for label, column in ((f"after, {ab.labels[0]}", ab.a), (f"before, {ab.labels[1]}", ab.b)):
        cells = [f"{column[f'call CPU ms/request, {p}']:.2f}" for p in CALL_PROCS]
        out.append(
            f"| whole call c={CALL_C}, side by side ({headline.AB_RUN.name}: {label}) "
            f"| {cells[0]} | - | {cells[1]} | {cells[2]} |"
        )
    return out


def _cpu(point: Point, name: str) -> float:
    return statistics.median(point.cpu.get(name, [0.0]))


# What was decided on each A/B of this round (bench/ab/NAME.md holds the figures).
AB_DECISIONS = {
    "round-vs-before": "this round's services against the last commit before it",
    "backend-client": "kept: the webhook calls the backend over aiohttp, not httpx",
    "linger": "kept: the adaptive linger against none (fewer Transit calls, less CPU per "
    "card request; whole-call throughput within noise here, better in the bench's "
    "own side-by-side run above)",
    "linger-until-as-large": "kept: the linger ends once the batch is as large as the last "
    "(card step better; the whole call is better with the full "
    "1 ms, a trade-off decided for the card step's target)",
    "linger-at-least-8": "dropped: lingering until at least 8 items (fewer Transit calls, "
    "but less whole-call throughput and more CPU)",
    "linger-yield": "dropped: yielding loop iterations while items arrive, instead of the "
    "timer (whole call worse)",
    "adaptive-in-flight": "kept: a second batch in flight only once as large as the last "
    "(whole call better, card step worse: the same trade-off)",
    "max-in-flight-1": "dropped: one batch in flight (card step worse)",
    "max-in-flight-4": "dropped: up to four batches in flight (no throughput gain)",
    "log-writer": "dropped: a writer thread for log lines (more webhook CPU per card request "
    "than lines joined per loop iteration; in an earlier run also more than one "
    "write per line)",
    "log-writer-loop": "kept: log lines joined into one write per event-loop iteration (less "
    "webhook CPU per card request; whole-call figures within noise)",
    "console-renderer": "kept: a small console renderer instead of structlog's "
    "ConsoleRenderer (less webhook CPU per request)",
    "ha-merge": "checked, not a change to keep or drop: the work past one machine "
    "(several addresses, failover, the drain) against main before it; within "
    "noise on both steps, so the single-node path pays nothing for it",
    "scrubber-key-cache": "kept on the in-process measurement (an access line 49 -> 41 us): "
    "within noise here, at a load average of 6",
    # Round 3 (#21): r-21-webhook's and r-21-backend's notes (/work/notes/r2/).
    "access-line-native": "#21, kept: our own events no longer become stdlib LogRecords, "
    "through the same scrubber and renderer (less webhook CPU per card request; the whole "
    "call's webhook CPU within noise)",
    "twiml-templates": "#21, kept: each TwiML document rendered once by VoiceResponse, only "
    "its varying values filled in per request (less webhook CPU on both steps; the "
    '"answers not as a working service would give" here are the first prompt\'s, counted '
    "by bench/presigned.lua before it knew the account-number prompt, both arms alike)",
    "signature-once": "#21, kept: the form parsed and the HMAC payload built once, the "
    "second URL spelling computed only when the first fails (less webhook CPU per card "
    "request; the whole-call figures within this load's noise)",
    "one-write": "#21, kept: the response's head and body in one socket write (p99 and the "
    "whole call's webhook CPU lower; card CPU the same)",
    "scrubber-key-plan": "#21, kept on the in-process measurement (the scrubber remembers "
    "each key: an access line 34.8 -> 25.9 us): this A/B, at a load average of 12-15, "
    "contradicts itself (card CPU lower, whole call's higher) and is noise",
    "one-hop": "#21, kept on the backend's own CPU per lookup (bench/lookup_cpu.py, -15 % "
    "on SQLite, -22 % on PostgreSQL); the whole-call A/B runs below are noise at a load "
    "average of 10-15",
    "granian": "#21, rejected: uvicorn stays (granian's p99 better, its CPU per whole call "
    "17-20 % higher over all processes)",
    "webhook-round3": "#21: the webhook's changes together (access line, TwiML, signature, "
    "one write) against main before the issue (cf3f7f8), before the backend's were merged",
    "round3": "#21: the round's before and after, the merged tree against main before the "
    "issue (cf3f7f8); the headline table's before and after columns",
}


def _ab_tables() -> list[str]:
    """The A/B runs of this round's changes (``python -m bench.ab``), quoted as written."""
    folder = Path(__file__).resolve().parent / "ab"
    out: list[str] = []
    for table in sorted(folder.glob("*.md")):
        decision = AB_DECISIONS.get(table.stem)
        out += [table.read_text(encoding="utf-8").rstrip("\n"), ""]
        if decision:
            out[-2:-1] = [
                out[-2].replace(
                    f"### A/B: {table.stem}\n",
                    f"### A/B: {table.stem}\n\n{decision[:1].upper()}{decision[1:]}.\n",
                    1,
                )
            ]
    return out


def _per_call_side_by_side(ab: headline.AbRun | None) -> str:
    """The same three figures, before and after this round, from its one A/B run."""
    rows = [f"call CPU ms/request, {name}" for name in CALL_PROCS]
    if ab is None or any(r not in ab.a or r not in ab.b for r in rows):
        return ""

    def three(column: dict[str, float]) -> str:
        a, b, c = (REQUESTS_PER_CALL * column[r] for r in rows)
        return f"{a:.1f}, {b:.1f} and {c:.1f} ms"

    return (
        f" (side by side in bench/ab/{headline.AB_RUN.name}: {three(ab.b)} before this round, "
        f"{headline.BEFORE_REV}; {three(ab.a)} after)"
    )


def analysis(s: Summary, ab: headline.AbRun | None) -> list[str]:
    """Why each figure is what it is, from this run's own numbers."""
    v, verdict = s.values, headline.verdict
    vault, base, call = s.card["vault"][CARD_C], s.card["baseline"][CARD_C], s.calls[CALL_C]
    hook_v, vault_v, hook_b = _cpu(vault, "webhook"), _cpu(vault, "vault"), _cpu(base, "baseline")
    per_call = {name: REQUESTS_PER_CALL * _cpu(call, name) for name in CALL_PROCS}
    busy = sum(per_call.values()) * call.med("rps") / REQUESTS_PER_CALL / 1000
    needed = CALL_C / (headline.CALL_P50_MS / 1000)  # req/s for that mean latency
    srv = s.server
    one, two = srv.get(VAULT_1W), srv.get(VAULT_2W)
    fast, slow = srv.get(BASE_1W), srv.get(BASE_H11)
    base_2w = srv.get(BASE_2W)
    cores_b = hook_b * base.med("rps") / 1000
    cores_v = hook_v * vault.med("rps") / 1000
    make_run = s.card[MAKE_RUN][CARD_C]
    off = s.pairs[NO_LINGER]
    aio, hx = s.clients["aiohttp"], s.clients["httpx"]
    lines = [
        "## Why",
        "",
        f"- **Throughput ratio {v['ratio']:.2f}** ({verdict('ratio', v['ratio'])}). With one "
        "worker the webhook is one Python process, at most one core: the baseline uses "
        f"{cores_b:.2f} of a core at c=32 ({hook_b:.2f} ms CPU per request). The Vault "
        f"variant spends {hook_v:.2f} ms per request in the webhook, so its own CPU would bound "
        f"the ratio near {hook_b / max(hook_v, 1e-9):.2f}; what the baseline does not pay is "
        "the coalescer's bookkeeping, JSON and base64 for the batch and the aiohttp call "
        f"({aio.median_cpu():.2f} ms CPU per Transit call, "
        f"{statistics.median(vault.transit):.3f} calls per request here). But it uses only "
        f"{cores_v:.2f} of its core: the rest of the time every connection waits for a Transit "
        f"answer from Vault ({vault_v:.2f} ms CPU per request), which runs on the other core "
        "with wrk and whatever else the machine runs. More batches in flight did not help "
        "(A/B max-in-flight-4 below), nor did sending at once whenever a slot is free, which "
        "helps this step and costs the whole call more (A/B adaptive-in-flight).",
        f"- **Card p99 {v['card_p99']:.1f} ms** ({verdict('card_p99', v['card_p99'])}): "
        f"the baseline's p99 in the same run is {base.med('p99_ms'):.1f} ms; the difference is "
        "the Transit round trip and the same waiting for the shared core.",
        f"- **Async HTTP client.** The same Transit encrypt batches ({BATCH_NOTE}) cost "
        f"{aio.median_cpu():.3f} ms CPU per call through aiohttp and {hx.median_cpu():.3f} ms "
        f"through httpx.AsyncClient ({aio.median_rate():.0f} against {hx.median_rate():.0f} "
        "calls/s), side by side in this run (table below): aiohttp carries Transit, and the "
        "webhook's calls to the backend too.",
    ]
    if one and two and fast and slow and base_2w:
        lines.append(
            f"- **uvicorn.** uvloop + httptools served {fast.med('rps') / slow.med('rps'):.2f}x "
            "the requests of asyncio + h11 (same app, same run), so `serve` names them. Two "
            f"workers gave the Vault-free baseline {base_2w.med('rps') / fast.med('rps'):.2f}x, "
            f"but the service's webhook {two.med('rps') / one.med('rps'):.2f}x "
            f"(p99 {one.med('p99_ms'):.0f} -> {two.med('p99_ms'):.0f} ms): its second core is "
            "Vault's. Workers also split the coalescer (smaller batches, more Vault calls) and "
            "the /metrics registry (a scrape sees one worker). So the default stays one worker; "
            "`WEB_CONCURRENCY=N` is there for machines with cores to spare."
        )
    return [
        *lines,
        f"- **Whole call: CPU {v['cpu']:.2f} ms per request** ({verdict('cpu', v['cpu'])}), "
        f"**p50 {v['call_p50']:.1f} ms** ({verdict('call_p50', v['call_p50'])}), **p99 "
        f"{v['call_p99']:.1f} ms** ({verdict('call_p99', v['call_p99'])}). One call ("
        f"{REQUESTS_PER_CALL} webhook requests) costs ~{per_call['webhook']:.1f} ms CPU in "
        "the webhook, "
        f"~{per_call['backend']:.1f} ms in the backend and ~{per_call['vault']:.1f} ms in "
        f"Vault{_per_call_side_by_side(ab)}. At "
        f"{call.med('rps') / REQUESTS_PER_CALL:.0f} calls/s the three processes use "
        f"{busy:.1f} of the 2 "
        "cores, wrk the rest: latency is queueing for CPU. wrk's 16 connections send back to "
        f"back with no caller pause, so the mean latency is {CALL_C} / throughput (Little's "
        f"law: {CALL_C / call.med('rps') * 1000:.1f} ms at {call.med('rps'):.0f} req/s); "
        f"p50 ≤ {headline.CALL_P50_MS:.0f} ms needs ~{needed:.0f} req/s from the same two "
        "cores. p99 is the same queue's tail, and whatever else runs on the machine (load "
        f"average {s.loadavg[1]:.1f} after the run).",
        f"- **Transit calls per request {v['transit']:.3f}** "
        f"({verdict('transit', v['transit'])}). A call's {REQUESTS_PER_CALL} webhook "
        "requests need several Transit operations: the webhook encrypts each entry (and the "
        "caller's number), the backend decrypts them in one batch and HMACs them in another. "
        "The coalescer sends at once when idle; under load a batch waits up to 1 ms "
        "(TRANSIT_LINGER) while the previous one carried several items, until it is as large "
        "as that one, and a second batch flies only once it is as large. Batches are what "
        "queues while one is in flight, so they shrink when the processes are descheduled "
        "for other work (compare the A/B runs below, each with its load average). Waiting "
        "longer does lower the count, but in a closed loop of 16 calls every millisecond a "
        "request waits is throughput lost (A/B linger-at-least-8 and linger-until-as-large "
        "below: fewer Transit calls, fewer requests served); 0.3 would take a linger past "
        "the 1 ms bound. Side by side in this "
        f"run, whole calls at c={CALL_C}: {statistics.median(call.transit):.3f} Transit calls "
        f"per request with the linger, {statistics.median(off.transit):.3f} without "
        f"({call.med('rps'):.0f} against {off.med('rps'):.0f} req/s, p50 "
        f"{call.med('p50_ms'):.1f} against {off.med('p50_ms'):.1f} ms, CPU "
        f"{call_cpu(call):.2f} against {call_cpu(off):.2f} ms per request).",
        f"- **`make run` {v['make_run']:.2f}x the bench's card step** "
        f"({verdict('make_run', v['make_run'])}). The services as the "
        "dev launcher runs them (console log lines, PYTHONUNBUFFERED=1, on a terminal: here "
        "a pseudo-terminal read by a thread) served "
        f"{make_run.med('rps'):.0f} card requests/s against {vault.med('rps'):.0f}, at "
        f"{_cpu(make_run, 'webhook'):.2f} ms webhook CPU per request against {hook_v:.2f}. "
        "Log lines made on the event loop are joined into one write per loop iteration, and "
        "the console renderer costs what JSON does (A/B log-writer-loop and "
        "console-renderer below).",
        "",
        "## Next steps",
        "",
        "Round 3 (#21) did the access line (structlog-native, A/B access-line-native), "
        "TwiML (twiml-templates), the signature check (signature-once), one socket write per "
        "response (one-write) and the backend's one thread hop per lookup (one-hop). What "
        "is left, from the webhook's profile after them (bench/profiles/webhook-after.md, "
        "shares of its event-loop thread under card steps at c=32):",
        "",
        "- The one socket write per response, ~20 %: a system call per response, the floor "
        "with uvicorn's protocol.",
        "- `verified_form`, ~18 %: Starlette's body and headers, `parse_qsl`, the signature "
        "check and the request key (~8 % of it).",
        "- The Transit request, ~11 % (the coalescer's batch over aiohttp).",
        "- The card step idles while every connection waits for Vault: a linger that knows "
        "whether any request is still on its way to the coalescer (instead of waiting up to "
        "the bound) would close part of that gap.",
        "- granian instead of uvicorn was measured and rejected (A/B granian): better p99, "
        "but 17-20 % more CPU per whole call over all processes (smaller Transit batches); "
        "the issue adopts it only if better on both.",
        "- Measure p50 and p99 on a quiet machine, where load generator, Vault and services "
        "do not share two cores with other work; here every figure includes the others' CPU.",
        "",
        "## Changes of the last two rounds, A/B",
        "",
        "Round 3's (#21) are marked so; the others are round 2's. "
        "Each change was measured against the code without it (`python -m bench.ab`: both "
        "variants as their own backend and webhook on one Vault, alternating runs, fresh "
        "pre-signed requests for each run, every answer checked) and kept only if it measured "
        "better. Other sessions' test suites shared the machine (the load averages in each "
        "table): differences of a few percent in throughput are noise; CPU per request is the "
        "steadier figure.",
        "",
        *_ab_tables(),
    ]


def _all_cpu(point: Point) -> float:
    """CPU per request over every process measured with ``point``."""
    return sum(statistics.median(runs) for runs in point.cpu.values())


def drills_section() -> list[str]:
    """The failure drills' figures: measured by the tests, not by this bench, and kept by
    hand in bench/drills.md so that a bench run does not drop them."""
    path = Path(__file__).with_name("drills.md")
    return path.read_text(encoding="utf-8").rstrip("\n").split("\n") if path.exists() else []


def ha_section(s: Summary) -> list[str]:
    """make run-ha's topology beside the single-node stack, and the webhook-to-backend
    choice it rests on (bench/ha.py)."""
    if s.ha is None:
        return []
    ha, one = s.ha, s.calls[CALL_C]
    runs = len(ha.topology.runs)

    def row(label: str, point: Point, cpu: float) -> str:
        return (
            f"| {label} | {point.med('rps') / REQUESTS_PER_CALL:.0f} | "
            f"{point.med('rps'):.0f} | "
            f"{point.med('p50_ms'):.1f} | {point.med('p99_ms'):.1f} | {cpu:.2f} | "
            f"{REQUESTS_PER_CALL * cpu:.2f} | {statistics.median(point.transit):.3f} |"
        )

    where = ", ".join(
        f"{name} {statistics.median(ms):.2f}" for name, ms in sorted(ha.topology.cpu.items())
    )
    out = [
        "",
        "## Past one machine (`make run-ha`'s topology)",
        "",
        f"Whole calls, c={CALL_C}, pre-signed, every answer checked, through Caddy to two "
        "webhooks, two backends, a 3-node OpenBao cluster and PostgreSQL, started by "
        "make run-ha's own code (`bench/ha.py`); median of "
        f"{runs} runs, beside the single-node stack's figures from this same run (its store "
        "is SQLite, in the backend's own process). CPU is summed over every process of each "
        f"({ha.processes} in the HA topology, Caddy and PostgreSQL with its connections' "
        f"processes included); a call is {REQUESTS_PER_CALL} webhook requests.",
        "",
        "| topology | calls/s | webhook req/s | p50 ms | p99 ms "
        "| CPU ms/request, all processes | CPU ms/call | Transit calls/request |",
        "|---|---|---|---|---|---|---|---|",
        row("one of each (the bench's stack above)", one, call_cpu(one)),
        row(
            "make run-ha: 3 Vault nodes, 2 backends, 2 webhooks, Caddy",
            ha.topology,
            _all_cpu(ha.topology),
        ),
        "",
        f"Where the HA topology's CPU goes, ms per webhook request: {where}. What the "
        "single stack does not pay: the proxy's hop; a lookup's decision on PostgreSQL, "
        "locks, reads and writes over TCP to other processes, where SQLite's runs in the "
        "backend itself; and each webhook and backend batching only the calls it serves: "
        "smaller Transit batches, more Transit calls per request (the last column). Vault's "
        "CPU sits on the active node: the services stay on the node that last answered, and "
        "a standby would only forward to it.",
    ]
    if ha.choice:
        out += [
            "",
            "### Between the webhook and its backends: client-side failover or a balancer",
            "",
            "Each variant is its own webhook on the topology's backends and Vault, called "
            "directly, runs alternating; then each carries the same load while one backend "
            "is SIGKILLed 2 s in (a wrk run; its failures are not in the checks above). "
            "The balancer is Caddy, least_conn, a request that cannot reach a backend "
            "tried on the other for up to 2 s.",
            "",
            "| between webhook and backends | req/s | p50 ms | p99 ms "
            "| CPU ms/request, all | of which the balancer "
            "| SIGKILL run: requests | not answered as a working service | max ms |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, point in ha.choice.items():
            kill = ha.kills[name].result
            lb = statistics.median(point.cpu["balancer"]) if "balancer" in point.cpu else 0
            out.append(
                f"| {name} | {point.med('rps'):.0f} | {point.med('p50_ms'):.1f} | "
                f"{point.med('p99_ms'):.1f} | {_all_cpu(point):.2f} | {lb:.2f} | "
                f"{kill.requests} | {ha.kills[name].failed} | {kill.max_ms:.0f} |"
            )
        out += ["", _choice_verdict(ha)]
    return out


def _choice_verdict(ha: HaFigures) -> str:
    """Which one the service uses, and why, from this run's figures."""
    client, lb = ha.choice[CLIENT_SIDE], ha.choice[BALANCER]
    lost_client, lost_lb = ha.kills[CLIENT_SIDE].failed, ha.kills[BALANCER].failed
    if lost_client > lost_lb or lost_client:
        return (
            f"**This run does not support the choice** of client-side failover "
            f"(`service/web/failover.py`): under the SIGKILL it lost {lost_client} "
            f"answers, the balancer {lost_lb}. Look at the webhook logs of the run."
        )
    return (
        f"Chosen: client-side failover (`service/web/failover.py`). Under the SIGKILL it "
        f"lost {lost_client} answers, the balancer {lost_lb}: a lookup in flight on the "
        "killed backend reaches the webhook through the balancer as a 502, which the "
        "webhook cannot tell from a backend's own failure, while the webhook's own client "
        "sees the reset and sends the lookup to the other backend with the same "
        "Idempotency-Key. In steady state the balancer is a hop of its own: "
        f"{_all_cpu(lb):.2f} against {_all_cpu(client):.2f} ms CPU per request over every "
        f"process, p99 {lb.med('p99_ms'):.1f} against {client.med('p99_ms'):.1f} ms, "
        f"{lb.med('rps'):.0f} against {client.med('rps'):.0f} req/s (differences of a few "
        "% are this shared machine's noise)."
    )


def markdown(s: Summary, chart: str) -> str:
    v = s.values
    all_points = [
        *s.card["vault"].values(),
        *s.card["baseline"].values(),
        *s.card[MAKE_RUN].values(),
        *s.calls.values(),
        *s.pairs.values(),
    ]
    if s.ha is not None:
        all_points += [s.ha.topology, *s.ha.choice.values()]
    command = "BENCH_QUICK=1 make bench" if s.quick else "make bench"
    ab = headline.read_ab()
    out = [
        "# Benchmark results",
        "",
        f"Produced by `{command}` in {s.elapsed:.0f} s on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()}), everything on loopback: "
        "wrk, the dev Vault (OpenBao), backend, webhook and the baseline share these cores. "
        "Each point is the median of "
        f"{len(next(iter(s.calls.values())).runs)} runs; Vault and baseline runs alternate. "
        f"1-minute load average {s.loadavg[0]:.1f} before, {s.loadavg[1]:.1f} after "
        "(anything above ~2 means other work shared the cores).",
        "",
        *headline.table(v, ab),
        "",
        f"Checks: {_runs_ok(all_points)}.",
        "",
        f"![throughput and latency against concurrency]({chart})",
        "",
        *analysis(s, ab),
        "",
        "## `POST /voice/card` (signature check, validation, encrypt, TwiML)",
        "",
        "| connections | Vault req/s | p50 ms | p99 ms "
        "| baseline req/s | p50 ms | p99 ms | ratio | Transit calls/request |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c, point in sorted(s.card["vault"].items()):
        base = s.card["baseline"][c]
        out.append(
            f"| {c} | {point.med('rps'):.0f} | {point.med('p50_ms'):.1f} | "
            f"{point.med('p99_ms'):.1f} | {base.med('rps'):.0f} | "
            f"{base.med('p50_ms'):.1f} | {base.med('p99_ms'):.1f} | "
            f"{paired_ratio(point, base):.2f} | "
            f"{statistics.median(point.transit):.3f} |"
        )
    out += [
        "",
        "## Whole calls (`/voice`, `/voice/account`, `/voice/card`, `/voice/pin` + backend lookup)",
        "",
        "Latency is per webhook request (what a caller waits between a keypress and the next "
        "prompt), over the mix of the three steps; one connection carries one call's "
        "requests at a time, so connections = concurrent calls.",
        "",
        "| concurrent calls | webhook req/s | p50 ms | p90 ms | p99 ms "
        "| Transit calls/request | items/Transit call |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, point in sorted(s.calls.items()):
        out.append(
            f"| {c} | {point.med('rps'):.0f} | {point.med('p50_ms'):.1f} | "
            f"{point.med('p90_ms'):.1f} | {point.med('p99_ms'):.1f} | "
            f"{statistics.median(point.transit):.3f} | "
            f"{statistics.median(point.batch):.1f} |"
        )
    for name, point in s.pairs.items():
        out.append(
            f"| {CALL_C}, {name} | {point.med('rps'):.0f} | {point.med('p50_ms'):.1f} | "
            f"{point.med('p90_ms'):.1f} | {point.med('p99_ms'):.1f} | "
            f"{statistics.median(point.transit):.3f} | "
            f"{statistics.median(point.batch):.1f} |"
        )
    make_run, vault = s.card[MAKE_RUN][CARD_C], s.card["vault"][CARD_C]
    out += [
        "",
        f"`{MAKE_RUN}`: the services as the dev launcher runs them (its output environment: "
        "console log lines, PYTHONUNBUFFERED=1, on a pseudo-terminal read by a thread). "
        f"`{NO_LINGER}`: the adaptive linger off. Both are their own backend and webhook, "
        "measured in turn with the bench's own.",
        *ha_section(s),
        *drills_section(),
        "",
        f"## `make run`'s configuration (`POST /voice/card`, c={CARD_C})",
        "",
        "| services | req/s | p50 ms | p99 ms | webhook CPU ms/request |",
        "|---|---|---|---|---|",
        f"| bench (JSON log lines to a file) | {vault.med('rps'):.0f} | "
        f"{vault.med('p50_ms'):.1f} | {vault.med('p99_ms'):.1f} | "
        f"{_cpu(vault, 'webhook'):.3f} |",
        f"| {MAKE_RUN} | {make_run.med('rps'):.0f} | {make_run.med('p50_ms'):.1f} | "
        f"{make_run.med('p99_ms'):.1f} | {_cpu(make_run, 'webhook'):.3f} |",
        "",
        "## Async HTTP client for Transit (`bench/clients.py`)",
        "",
        f"The same Transit encrypt batches ({BATCH_NOTE}), {clients.CALLS} calls per round, "
        "rounds alternating between the clients; medians.",
        "",
        "| client | CPU ms per Transit call | Transit calls/s |",
        "|---|---|---|",
        *[
            f"| {name} | {f.median_cpu():.3f} | {f.median_rate():.0f} |"
            for name, f in s.clients.items()
        ],
    ]
    out += [
        "",
        f"## uvicorn settings (`POST /voice/card`, c={CARD_C})",
        "",
        "The first three rows serve the baseline app (no Vault: only the server settings "
        "differ); the last two the service's own webhook (`WEB_CONCURRENCY`).",
        "",
        "| settings | req/s | p50 ms | p99 ms |",
        "|---|---|---|---|",
        *[
            f"| {name} | {p.med('rps'):.0f} | {p.med('p50_ms'):.1f} | {p.med('p99_ms'):.1f} |"
            for name, p in s.server.items()
        ],
    ]
    out += [
        "",
        "## Where the CPU goes (CPU ms per webhook request, median of runs)",
        "",
        "| measurement | " + " | ".join(CPU_PROCS) + " |",
        "|---|" + "---|" * len(CPU_PROCS),
        _cpu_row(f"card c={CARD_C}, Vault", s.card["vault"][CARD_C]),
        _cpu_row(f"card c={CARD_C}, baseline", s.card["baseline"][CARD_C]),
        _cpu_row(f"card c={CARD_C}, {MAKE_RUN}", s.card[MAKE_RUN][CARD_C]),
        _cpu_row(f"whole call c={CALL_C}", s.calls[CALL_C]),
        *[_cpu_row(f"whole call c={CALL_C}, {name}", point) for name, point in s.pairs.items()],
        *_cpu_side_by_side(ab),
        "",
        "## Memory (RSS, MB)",
        "",
        "| process | at rest (after warm-up) | peak under whole-call load |",
        "|---|---|---|",
        *[
            f"| {name} | {s.rss_rest[name]:.0f} | {s.rss_load.get(name, 0):.0f} |"
            for name in s.rss_rest
        ],
        "",
        "The baseline webhook idles during the whole-call runs (its peak is its rest).",
        "",
    ]
    return "\n".join(out)


def chart(s: Summary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (thr, lat) = plt.subplots(1, 2, figsize=(12, 4.5))
    series = [
        ("Vault Transit /voice/card", s.card["vault"], "tab:blue"),
        ("in-process AES baseline /voice/card", s.card["baseline"], "tab:gray"),
        ("Vault whole call (per request)", s.calls, "tab:green"),
    ]
    for label, points, color in series:
        xs = sorted(points)
        thr.plot(xs, [points[c].med("rps") for c in xs], "o-", color=color, label=label)
        lat.plot(xs, [points[c].med("p50_ms") for c in xs], "o-", color=color, label=f"{label} p50")
        lat.plot(
            xs, [points[c].med("p99_ms") for c in xs], "s--", color=color, label=f"{label} p99"
        )
    thr.set(xlabel="concurrent connections", ylabel="requests/s", title="Throughput")
    lat.set(xlabel="concurrent connections", ylabel="ms", title="Latency p50 / p99", yscale="log")
    for ax in (thr, lat):
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(s: Summary, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    chart(s, out_dir / "chart.png")
    text = markdown(s, "chart.png")
    scale = out_dir / "scale.md"  # bench/scale.py's section, when it ran
    if scale.exists():
        text += "\n" + scale.read_text(encoding="utf-8")
    (out_dir / "RESULTS.md").write_text(text, encoding="utf-8")
