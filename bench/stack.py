"""The processes under test, all on loopback: a dev Vault, backend, webhook, and the
baseline webhook (same app, in-process AES key). Started with the same code as ``make run``
(service.devtools.devstack), stopped on exit whatever happens."""

from __future__ import annotations

import contextlib
import os
import pty
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench import load
from service.backend.enrolment import DEMO_ACCOUNT_NUMBER, DEMO_CARD, seed_demo
from service.devtools.devstack import DevVault, ServiceProcess, free_port, stop_process, wait_http
from service.devtools.launcher import dev_output_env
from service.settings import Settings
from service.vault.bootstrap import bootstrap, issue_credentials
from service.vault.client import VaultClient
from service.vault.transit import b64, call_context


@dataclass
class Bench:
    vault: DevVault
    admin: VaultClient
    backend: ServiceProcess
    webhook: ServiceProcess
    baseline: subprocess.Popen[bytes]
    baseline_url: str
    twilio_token: str
    variant_env: Callable[[int], dict[str, str]] | None = None

    def pids(self) -> dict[str, int]:
        procs = {
            "vault": self.vault.process,
            "backend": self.backend.process,
            "webhook": self.webhook.process,
            "baseline": self.baseline,
        }
        return {name: p.pid for name, p in procs.items() if p is not None}

    def calls(self, sids: list[str]) -> list[load.Call]:
        return whole_calls(self.admin, sids)


def whole_calls(admin: VaultClient, sids: list[str]) -> list[load.Call]:
    """The whole calls of ``sids``, on the identification paths BENCH_CALL_PATH names
    (bench/load.py: "mix" by default), with the ciphertexts the webhook would have made
    for their pre-signed steps."""
    typing = load.typed(os.environ.get("BENCH_CALL_PATH", "mix"), len(sids))
    cards = _ciphertexts(admin, sids, DEMO_CARD, "card_last4")
    numbered = [sid for sid, t in zip(sids, typing, strict=True) if t]
    numbers = iter(_ciphertexts(admin, numbered, DEMO_ACCOUNT_NUMBER, "account_number"))
    return [
        load.Call(sid, card, next(numbers) if t else None)
        for sid, card, t in zip(sids, cards, typing, strict=True)
    ]


def _ciphertexts(admin: VaultClient, sids: list[str], plaintext: str, field: str) -> list[str]:
    """``plaintext`` encrypted for each call's ``field``, as the webhook would have,
    in batches (the bench's own Vault calls happen before measuring)."""
    out: list[str] = []
    for start in range(0, len(sids), 200):
        chunk = sids[start : start + 200]
        response = admin.write(
            "transit/encrypt/ivr-dtmf",
            "bench encrypt",
            {
                "batch_input": [
                    {
                        "plaintext": b64(plaintext.encode()),
                        "context": b64(call_context(s, field)),
                    }
                    for s in chunk
                ]
            },
        )
        out += [r["ciphertext"] for r in response["data"]["batch_results"]]
    return out


def transit_totals(*urls: str) -> tuple[float, float]:
    """(HTTP calls, items) sent to Transit so far, summed over operations and services,
    from each service's own /metrics."""
    calls = items = 0.0
    for url in urls:
        text = httpx.get(f"{url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "ivr_transit_http_calls_total":
                    calls += sample.value
                elif sample.name == "ivr_transit_items_total":
                    items += sample.value
    return calls, items


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(workdir: Path, stack: ExitStack) -> Bench:
    shutil.rmtree(workdir, ignore_errors=True)  # a previous run's store and logs
    workdir.mkdir(parents=True)
    vault = DevVault.start(workdir / "vault")
    stack.callback(vault.stop)
    admin = VaultClient(vault.addr, vault.root_token, timeout=10)
    bootstrap(admin)
    creds = issue_credentials(admin, ["ivr-webhook", "ivr-backend"])
    for role, c in creds.items():
        c.write(workdir / role)
    twilio_token = secrets.token_urlsafe(24)
    (workdir / "twilio").write_text(twilio_token)
    (workdir / "backend-token").write_text(secrets.token_urlsafe(24))
    backend_port, webhook_port = free_port(), free_port()
    base = {
        "PATH": os.environ.get("PATH", ""),
        "VAULT_ADDR": vault.addr,
        "BACKEND_TOKEN_FILE": str(workdir / "backend-token"),
        "STORE_PATH": str(workdir / "accounts.sqlite3"),
        "LOG_FORMAT": "json",
        "HOME": str(workdir),
    }

    def env(role: str, **extra: str) -> dict[str, str]:
        return {
            **base,
            "VAULT_ROLE_ID_FILE": str(workdir / f"ivr-{role}" / "role_id"),
            "VAULT_SECRET_ID_FILE": str(workdir / f"ivr-{role}" / "secret_id"),
            **extra,
        }

    b_env = env("backend", BACKEND_PORT=str(backend_port))
    seed_demo(Settings.from_environ(b_env))

    def w_env(port: int) -> dict[str, str]:
        return env(
            "webhook",
            WEBHOOK_PORT=str(port),
            BACKEND_URL=f"http://127.0.0.1:{backend_port}",
            TWILIO_AUTH_TOKEN_FILE=str(workdir / "twilio"),
            PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
            # The PIN steps are signed before the run starts, which may be longer
            # than the default STEP_MAX_AGE.
            STEP_MAX_AGE="4h",
        )

    backend = ServiceProcess("backend", backend_port, b_env, workdir)
    stack.callback(backend.stop)
    backend.start()
    webhook = ServiceProcess("webhook", webhook_port, w_env(webhook_port), workdir)
    stack.callback(webhook.stop)
    webhook.start()
    baseline, baseline_url = start_baseline(workdir, w_env, stack)
    wait_http(f"{webhook.url}/readyz", timeout=30)
    bench = Bench(vault, admin, backend, webhook, baseline, baseline_url, twilio_token)
    bench.variant_env = w_env
    return bench


def start_baseline(
    workdir: Path,
    env_for: Callable[[int], dict[str, str]],
    stack: ExitStack,
    name: str = "baseline",
    **variant: str,
) -> tuple[subprocess.Popen[bytes], str]:
    """The baseline webhook as its own process; ``variant`` sets BENCH_LOOP/HTTP/WORKERS."""
    port = free_port()
    with (workdir / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.baseline"],
            env={**env_for(port), **variant},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
            start_new_session=True,
        )
    # Its own session: with several workers, stopping must reach the whole group.
    stack.callback(_stop_group, process)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", timeout=30, process=process)
    return process, url


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    stop_process(process)


_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None  # gone meanwhile


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and of its live children: PostgreSQL
    serves each connection in a process of its own (a child of the server), and a child's
    time reaches its parent's only once it is reaped."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    total = int(fields[11]) + int(fields[12])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            child = _stat(int(entry.name))
            if child is not None and child[1] == str(pid):
                total += int(child[11]) + int(child[12])
    return total / _TICK


def start_webhook_variant(bench: Bench, stack: ExitStack, **env: str) -> str:
    """Another webhook of the service (``ivr-vault serve webhook``) with extra environment,
    e.g. WEB_CONCURRENCY; same Vault, backend and credentials."""
    port = free_port()
    variant_env = {
        **bench.webhook.env,
        "WEBHOOK_PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        **env,
    }
    process = ServiceProcess("webhook", port, variant_env, bench.webhook.log_dir / "variant")
    stack.callback(process.stop)
    process.start()
    wait_http(f"{process.url}/readyz", timeout=30)
    return process.url


def _drain(fd: int) -> None:
    """Read a pseudo-terminal as a terminal emulator would, until it closes."""
    with contextlib.suppress(OSError):
        while os.read(fd, 1 << 16):
            pass


@dataclass
class Pair:
    """Another backend + webhook of the service on the bench's Vault and credentials."""

    name: str
    backend: ServiceProcess
    webhook: ServiceProcess

    def pids(self) -> dict[str, int]:
        return {
            role: p.process.pid
            for role, p in (("backend", self.backend), ("webhook", self.webhook))
            if p.process is not None
        }


def start_pair(
    bench: Bench, stack: ExitStack, name: str, env: dict[str, str], *, terminal: bool = False
) -> Pair:
    """Backend and webhook with extra environment. ``terminal``: their output goes to a
    pseudo-terminal that a thread reads, as under ``make run``."""
    backend_port, webhook_port = free_port(), free_port()
    b_env = {**bench.backend.env, "BACKEND_PORT": str(backend_port), **env}
    w_env = {
        **bench.webhook.env,
        "WEBHOOK_PORT": str(webhook_port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{webhook_port}",
        "BACKEND_URL": f"http://127.0.0.1:{backend_port}",
        **env,
    }
    log_dir = bench.webhook.log_dir / name
    pair = Pair(
        name,
        ServiceProcess("backend", backend_port, b_env, log_dir),
        ServiceProcess("webhook", webhook_port, w_env, log_dir),
    )
    for process in (pair.backend, pair.webhook):
        stack.callback(process.stop)
        if terminal:
            master, slave = pty.openpty()
            stack.callback(os.close, master)
            try:
                process.start(terminal_fd=slave)
            finally:
                os.close(slave)  # the child holds its own copy
            threading.Thread(target=_drain, args=(master,), daemon=True).start()
        else:
            process.start()
    wait_http(f"{pair.webhook.url}/readyz", timeout=30)
    return pair


def start_make_run_pair(bench: Bench, stack: ExitStack) -> Pair:
    """The services as ``make run`` runs them: the dev launcher's output environment
    (console log lines, unbuffered) on a terminal."""
    return start_pair(bench, stack, "make-run", dev_output_env({}), terminal=True)
