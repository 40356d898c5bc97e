"""The bench's HA section: ``make run-ha``'s topology (3 OpenBao nodes, 2 backends, 2
webhooks behind Caddy, one store), started through the same code
(:func:`service.devtools.ha.start_ha`), measured with whole pre-signed calls through Caddy,
every answer checked; CPU over every process of it.

And the choice between the webhook and its backends: client-side failover (BACKEND_URL
naming both) against a Caddy load balancer in front of them (BACKEND_URL naming it),
each on its own webhook beside the topology, runs alternating: throughput, latency and CPU
per request (the balancer's included), then the same load while one backend is SIGKILLed:
how many answers were not a working service's.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import load, stack
from bench.model import BALANCER, CALL_C, CLIENT_SIDE, Plan, Point
from service.devtools.devstack import ServiceProcess, free_port, stop_process, wait_http
from service.devtools.ha import HaStack, start_ha
from service.devtools.proxy import find_caddy
from service.settings import Settings

KILL_AFTER_S = 2.0

# The balancer, configured as proxy/Caddyfile.ha balances the webhooks: least_conn, a
# request that cannot reach a backend tried on the other for up to 2 s, a failed backend
# out for 5 s. (No lb_retry_match for POST: Caddy 2.6 retries it with an empty body.)
BALANCER_CADDYFILE = """\
{
	admin off
}
http://127.0.0.1:{$PORT} {
	reverse_proxy {$UPSTREAMS} {
		lb_policy least_conn
		lb_try_duration 2s
		lb_try_interval 50ms
		fail_duration 5s
		max_fails 1
		transport http {
			dial_timeout 1s
		}
	}
}
"""


@dataclass
class KillRun:
    """One load run during which a backend was SIGKILLed."""

    result: load.WrkResult

    @property
    def failed(self) -> int:
        return self.result.bad + self.result.errors


@dataclass
class HaFigures:
    topology: Point
    processes: int
    choice: dict[str, Point] = field(default_factory=dict)
    kills: dict[str, KillRun] = field(default_factory=dict)


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _pids(ha: HaStack) -> dict[str, int]:
    found = {node.node_id: node.process.pid for node in ha.vault.nodes if node.process}
    for service in (*ha.backends, *ha.webhooks):
        if service.process is not None:
            found[service.label] = service.process.pid
    if ha.proxy.process is not None:
        found["proxy"] = ha.proxy.process.pid
    if ha.postgres.process is not None:
        found["postgres"] = ha.postgres.process.pid  # with its connections' processes
    return found


def _balancer(work: Path, upstreams: list[str], exits: ExitStack) -> tuple[str, int]:
    """Caddy in front of the backends; its URL and pid."""
    port = free_port()
    config = work / "backend-lb.Caddyfile"
    config.write_text(BALANCER_CADDYFILE, encoding="utf-8")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "XDG_DATA_HOME": str(work / "lb-data"),
        "XDG_CONFIG_HOME": str(work / "lb-config"),
        "PORT": str(port),
        "UPSTREAMS": " ".join(upstreams),
    }
    with (work / "backend-lb.log").open("ab") as log:
        process = subprocess.Popen(
            [find_caddy(), "run", "--config", str(config), "--adapter", "caddyfile"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    exits.callback(stop_process, process)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", timeout=20, process=process)  # a backend's, through it
    return url, process.pid


def _webhook(ha: HaStack, name: str, exits: ExitStack, **env: str) -> ServiceProcess:
    """Another webhook of the topology, called directly (its own PUBLIC_BASE_URL)."""
    port = free_port()
    base = ha.webhooks[0].env
    process = ServiceProcess(
        "webhook",
        port,
        {
            **base,
            "WEBHOOK_PORT": str(port),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "SHUTDOWN_DRAIN": "0",
            **env,
        },
        ha.ha_dir / "logs",
        name=name,
    )
    exits.callback(process.stop)
    process.start()
    wait_http(f"{process.url}/readyz", timeout=30)
    return process


def measure(
    plan: Plan, work: Path, exits: ExitStack, measure_point: Callable[..., None]
) -> HaFigures:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "LOG_FORMAT": "json",
        "WEBHOOK_PORT": str(free_port()),
        # The PIN steps are signed before the runs, which may be longer than the
        # default STEP_MAX_AGE.
        "STEP_MAX_AGE": "4h",
    }
    _log("make run-ha's topology: 3 OpenBao nodes, 2 backends, 2 webhooks, Caddy")
    with contextlib.redirect_stdout(sys.stderr):  # the bench's stdout ends with its line
        ha = start_ha(Settings.from_environ(env), env, state_dir=work / ".dev", stack=exits)
    token = ha.twilio_token_file.read_text(encoding="utf-8").strip()
    admin = ha.vault.admin()
    exits.callback(admin.close)

    def call_file(name: str, url: str, seconds: float, rate: int) -> Path:
        sids = [
            load.new_call_sid() for _ in range(int(rate * seconds / load.REQUESTS_PER_CALL) + 500)
        ]
        return load.write_requests(
            work / f"calls-{name}.txt",
            load.call_requests(stack.whole_calls(admin, sids)),
            base_url=url,
            auth_token=token,
        )

    services = tuple(s.url for s in (*ha.webhooks, *ha.backends))
    load.run_wrk(ha.proxy.url, call_file("warm", ha.proxy.url, 2, 3000), connections=8, seconds=2)
    figures = HaFigures(Point([]), len(_pids(ha)))
    for _ in range(plan.runs):
        measure_point(
            _pids(ha),
            services,
            ha.proxy.url,
            call_file("ha", ha.proxy.url, plan.seconds, 4000),
            connections=CALL_C,
            seconds=plan.seconds,
            point=figures.topology,
        )
    _log(
        f"ha c={CALL_C}: {figures.topology.med('rps'):.0f} req/s "
        f"p50 {figures.topology.med('p50_ms'):.1f} ms p99 "
        f"{figures.topology.med('p99_ms'):.1f} ms"
    )

    _choose(ha, work, exits, figures, plan, call_file, measure_point)
    return figures


def _choose(
    ha: HaStack,
    work: Path,
    exits: ExitStack,
    figures: HaFigures,
    plan: Plan,
    call_file: Callable[[str, str, float, int], Path],
    measure_point: Callable[..., None],
) -> None:
    """Client-side failover against a balancer, between the webhook and the backends."""
    lb_url, lb_pid = _balancer(work, [f"127.0.0.1:{b.port}" for b in ha.backends], exits)
    variants = {
        CLIENT_SIDE: _webhook(ha, "webhook-client", exits),
        BALANCER: _webhook(ha, "webhook-lb", exits, BACKEND_URL=lb_url),
    }
    common = {n.node_id: n.process.pid for n in ha.vault.nodes if n.process}
    common.update({b.label: b.process.pid for b in ha.backends if b.process})
    if ha.postgres.process is not None:
        common["postgres"] = ha.postgres.process.pid
    extra: dict[str, dict[str, int]] = {CLIENT_SIDE: {}, BALANCER: {"balancer": lb_pid}}
    for name, webhook in variants.items():
        load.run_wrk(webhook.url, call_file("warm", webhook.url, 2, 3000), connections=8, seconds=2)
        figures.choice[name] = Point([])
    for _ in range(plan.runs):
        for name, webhook in variants.items():
            assert webhook.process is not None
            pids = {**common, "webhook": webhook.process.pid, **extra[name]}
            measure_point(
                pids,
                (webhook.url, *(b.url for b in ha.backends)),
                webhook.url,
                call_file("choice", webhook.url, plan.seconds, 4000),
                connections=CALL_C,
                seconds=plan.seconds,
                point=figures.choice[name],
            )
    for name, webhook in variants.items():
        figures.kills[name] = _kill_run(ha, webhook, call_file, plan)
        point = figures.choice[name]
        _log(
            f"{name}: {point.med('rps'):.0f} req/s p99 {point.med('p99_ms'):.1f} ms; "
            f"SIGKILL run: {figures.kills[name].failed} of "
            f"{figures.kills[name].result.requests} not answered"
        )


def _kill_run(
    ha: HaStack,
    webhook: ServiceProcess,
    call_file: Callable[[str, str, float, int], Path],
    plan: Plan,
) -> KillRun:
    """Whole calls for a while; one backend SIGKILLed after KILL_AFTER_S; then started
    again (and given the balancer's fail_duration to be taken back)."""
    seconds = int(max(plan.seconds, 2 * KILL_AFTER_S))
    requests = call_file("kill", webhook.url, seconds, 4000)
    victim = ha.backends[-1]
    assert victim.process is not None
    killer = threading.Timer(KILL_AFTER_S, victim.process.kill)
    killer.start()
    result = load.run_wrk(webhook.url, requests, connections=CALL_C, seconds=seconds)
    killer.join()
    victim.process.wait()
    victim.start()
    wait_http(f"{victim.url}/readyz", timeout=30)
    time.sleep(5.5)  # the balancer's fail_duration: it sends to the victim again after
    with httpx.Client(timeout=5) as client:  # and the webhooks have seen it answer
        client.get(f"{webhook.url}/readyz")
    return KillRun(result)
