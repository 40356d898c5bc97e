"""``make bench`` (``python -m bench``): measure, write RESULTS.md and chart.png, and end
with one summary line. ``BENCH_QUICK=1``: a short run (about 4 minutes) into bench/.work/.
``BENCH_HA=0``: without the section on make run-ha's topology (bench/ha.py).
``BENCH_SCALE=0``: without "Accounts at scale" (bench/scale.py: 1,000,000 accounts imported
into each engine, quick: 100,000), which runs first, alone on its own Vault.
``BENCH_CALL_PATH``: the whole calls' identification (bench/load.py): ``mix`` (default),
``star`` or ``number``.

Every point is measured several times, service and baseline interleaved (A B A B ...) so
that drift on this shared machine hits both alike; the median run is reported.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from bench import clients, load, report, stack
from bench import ha as bench_ha
from bench import scale as bench_scale
from bench.model import CALL_C, CARD_C, Plan, Point

HERE = Path(__file__).resolve().parent


class RssSampler:
    """Peak RSS of each process while a measurement runs."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], stack.rss_mb(pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(
    pids: dict[str, int],
    services: tuple[str, ...],
    url: str,
    requests_file: Path,
    *,
    connections: int,
    seconds: float,
    point: Point,
    rss: dict[str, float] | None = None,
) -> None:
    """One wrk run into ``point``, with the CPU each process spent per request (ms): where
    the time goes on a machine where wrk, Vault and the services share two cores.
    ``services``: the webhook and backend URLs whose /metrics count Transit calls."""
    calls_before, items_before = stack.transit_totals(*services)
    cpu_before = {name: stack.cpu_seconds(pid) for name, pid in pids.items()}
    with RssSampler(pids) as sampler:
        result = load.run_wrk(url, requests_file, connections=connections, seconds=seconds)
    calls_after, items_after = stack.transit_totals(*services)
    point.runs.append(result)
    point.transit.append((calls_after - calls_before) / max(result.requests, 1))
    point.batch.append((items_after - items_before) / max(calls_after - calls_before, 1))
    for name, pid in pids.items():
        per_request = (stack.cpu_seconds(pid) - cpu_before[name]) * 1000 / max(result.requests, 1)
        point.cpu.setdefault(name, []).append(per_request)
        if rss is not None:
            rss[name] = max(rss.get(name, 0.0), sampler.peak[name])


# uvicorn settings compared on the baseline app (the same server code, without Vault, so
# that only the server settings differ), then on the service's webhook itself. The first is
# what service.cli.serve.uvicorn_options uses.
VARIANTS: dict[str, dict[str, str]] = {
    report.BASE_1W: {},
    report.BASE_H11: {"BENCH_LOOP": "asyncio", "BENCH_HTTP": "h11"},
    report.BASE_2W: {"BENCH_WORKERS": "2"},
}


def server_settings(
    bench: stack.Bench,
    plan: Plan,
    exits: ExitStack,
    card_file: Callable[[str, str, float, int], Path],
) -> dict[str, Point]:
    assert bench.variant_env is not None
    urls = {}
    for i, (name, variant) in enumerate(VARIANTS.items()):
        if not variant:
            urls[name] = bench.baseline_url
            continue
        _, urls[name] = stack.start_baseline(
            bench.webhook.log_dir, bench.variant_env, exits, f"variant{i}", **variant
        )
        load.run_wrk(
            urls[name], card_file(f"variant{i}", urls[name], 2, 4000), connections=8, seconds=2
        )  # warm up
    # The service itself with two workers (WEB_CONCURRENCY), against its one-worker self.
    urls[report.VAULT_1W] = bench.webhook.url
    urls[report.VAULT_2W] = stack.start_webhook_variant(bench, exits, WEB_CONCURRENCY="2")
    load.run_wrk(
        urls[report.VAULT_2W],
        card_file("variant", urls[report.VAULT_2W], 2, 4000),
        connections=8,
        seconds=2,
    )  # warm up
    points = {name: Point([]) for name in urls}
    services = (bench.webhook.url, bench.backend.url)
    for _ in range(plan.runs):
        for name, url in urls.items():
            measure(
                bench.pids(),
                services,
                url,
                card_file("variant", url, plan.seconds, 6000),
                connections=CARD_C,
                seconds=plan.seconds,
                point=points[name],
            )
    for name, point in points.items():
        log(f"server {name}: {point.med('rps'):.0f} req/s p99 {point.med('p99_ms'):.1f} ms")
    return points


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def main() -> int:
    plan = Plan.from_environ()
    work = HERE / ".work"
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    scale_line = None
    if os.environ.get("BENCH_SCALE", "1") != "0":
        log("accounts at scale (bench/scale.py)")
        scale_line = bench_scale.measure(plan.quick, plan.out_dir)
    with ExitStack() as exits:
        log("starting dev Vault, backend, webhook and baseline on loopback")
        bench = stack.start(work / "run", exits)
        # The services as `make run` runs them, and with the adaptive linger off: each its
        # own backend and webhook, measured in turn with the bench's own (A B C A B C ...).
        make_run = stack.start_make_run_pair(bench, exits)
        no_linger = stack.start_pair(bench, exits, "no-linger", {"TRANSIT_LINGER": "0"})
        targets = {"vault": bench.webhook.url, "baseline": bench.baseline_url}
        vault_pid = {"vault": bench.vault.process.pid} if bench.vault.process else {}
        own = stack.Pair("bench", bench.backend, bench.webhook)
        pairs = {"vault": own, report.MAKE_RUN: make_run, report.NO_LINGER: no_linger}

        def card_file(name: str, url: str, seconds: float, rate: int) -> Path:
            return load.write_requests(
                work / f"card-{name}.txt",
                load.card_requests(int(rate * seconds) + 1000),
                base_url=url,
                auth_token=bench.twilio_token,
            )

        def call_file(name: str, url: str, seconds: float, rate: int) -> Path:
            sids = [
                load.new_call_sid()
                for _ in range(int(rate * seconds / load.REQUESTS_PER_CALL) + 500)
            ]
            return load.write_requests(
                work / f"calls-{name}.txt",
                load.call_requests(bench.calls(sids)),
                base_url=url,
                auth_token=bench.twilio_token,
            )

        log("async HTTP clients: the same Transit batches through httpx and aiohttp")
        client_figures = clients.compare(
            bench.vault.addr, bench.vault.root_token.reveal(), rounds=plan.runs
        )

        warm = {
            **targets,
            report.MAKE_RUN: make_run.webhook.url,
            report.NO_LINGER: no_linger.webhook.url,
        }
        for name, url in warm.items():  # warm up: imports, pools, Vault login
            load.run_wrk(url, card_file(name, url, 2, 4000), connections=8, seconds=2)
        rest = {name: stack.rss_mb(pid) for name, pid in bench.pids().items()}

        card: dict[str, dict[int, Point]] = {name: {} for name in [*targets, report.MAKE_RUN]}
        for c in plan.card_concurrency:
            for _ in range(plan.runs):
                for name, url in targets.items():
                    measure(
                        bench.pids(),
                        (bench.webhook.url, bench.backend.url),
                        url,
                        card_file(name, url, plan.seconds, 6000),
                        connections=c,
                        seconds=plan.seconds,
                        point=card[name].setdefault(c, Point([])),
                    )
                if c == CARD_C:
                    url = make_run.webhook.url
                    measure(
                        {**make_run.pids(), **vault_pid},
                        (make_run.webhook.url, make_run.backend.url),
                        url,
                        card_file("make-run", url, plan.seconds, 6000),
                        connections=c,
                        seconds=plan.seconds,
                        point=card[report.MAKE_RUN].setdefault(c, Point([])),
                    )
            log(
                f"card c={c}: vault {card['vault'][c].med('rps'):.0f} req/s "
                f"p99 {card['vault'][c].med('p99_ms'):.1f} ms; baseline "
                f"{card['baseline'][c].med('rps'):.0f} req/s "
                f"p99 {card['baseline'][c].med('p99_ms'):.1f} ms"
            )

        server = server_settings(bench, plan, exits, card_file)

        calls: dict[int, Point] = {}
        call_pairs: dict[str, Point] = {name: Point([]) for name in pairs if name != "vault"}
        under_load: dict[str, float] = {}
        for c in plan.call_concurrency:
            calls[c] = Point([])
            for _ in range(plan.runs):
                for name, pair in pairs.items():
                    if name != "vault" and c != CALL_C:
                        continue
                    url = pair.webhook.url
                    pids = bench.pids() if name == "vault" else {**pair.pids(), **vault_pid}
                    measure(
                        pids,
                        (url, pair.backend.url),
                        url,
                        call_file(name, url, plan.seconds, 4000),
                        connections=c,
                        seconds=plan.seconds,
                        point=calls[c] if name == "vault" else call_pairs[name],
                        rss=under_load if name == "vault" else None,
                    )
            log(
                f"call c={c}: {calls[c].med('rps'):.0f} req/s p50 "
                f"{calls[c].med('p50_ms'):.1f} ms p99 {calls[c].med('p99_ms'):.1f} ms; "
                f"transit calls/request {statistics.median(calls[c].transit):.3f}"
            )

        ha_figures = None
        if plan.ha:
            shutil.rmtree(work / "ha", ignore_errors=True)  # a previous run's cluster
            ha_figures = bench_ha.measure(plan, work / "ha", exits, measure)

        summary = report.Summary.build(
            card,
            calls,
            server,
            rest,
            under_load,
            plan.quick,
            elapsed=time.monotonic() - started,
            loadavg=(load_before, os.getloadavg()[0]),
            pairs=call_pairs,
            clients=client_figures,
            ha=ha_figures,
        )
        report.write(summary, plan.out_dir)
    log(f"wrote {plan.out_dir / 'RESULTS.md'} and chart.png in {time.monotonic() - started:.0f} s")
    print(summary.line(), flush=True)
    if scale_line is not None:
        print(scale_line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
