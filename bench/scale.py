"""Accounts at scale (docs/security.md, identification): ``python -m bench.scale``, and a section
of ``make bench``.

On each engine (SQLite, then PostgreSQL started by ``service/devtools/postgres.py``), with
one dev Vault and real backend and webhook processes:

1. two stores: 1,000 generated accounts imported (``ivr-vault accounts import``) into
   each, then the other N - 1,000 into the second, timed: accounts/s, Transit calls per
   account (the importer's own count), the importer's peak RSS (its VmHWM) and CPU;
2. the second store's bytes per account: its growth during that import, divided by the
   accounts added (SQLite: the files after a checkpoint; PostgreSQL: ``pg_database_size``);
3. whole calls (the simulator, ``service/devtools/caller.py``: account number, card, PIN;
   each checked to find its account) timed from the first request to the last, against
   each store through its own backend and webhook, runs alternating: p50 and p99.

Before that, Vault alone: Transit HMACs in the importer's batches and parallelism, items/s
(the bound on accounts/s: an account with one caller number is 4 HMAC inputs).

N is 1,000,000 (``BENCH_QUICK=1``: 100,000; ``BENCH_SCALE_ACCOUNTS`` sets it).
``BENCH_SCALE_ENGINES``: the engines and their order (default ``sqlite,postgresql``; a
full run takes 15-25 minutes per engine on the shared two cores, so
``postgresql,sqlite`` measures the engine the targets name first). Writes
``scale.md`` (bench/, or bench/.work/quick/ when quick), which ``make bench``'s RESULTS.md
quotes, and prints one line:
``scale: accounts N import R/s rss M MB lookup p99 1k X ms 1M Y ms``.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from service.backend.enrolment import ITEMS_PER_CALL
from service.devtools import accounts_file
from service.devtools.caller import Caller
from service.devtools.devstack import DevVault, ServiceProcess, free_port, wait_http
from service.devtools.postgres import LocalPostgres
from service.settings import Settings
from service.store.migrations import migrate_store
from service.vault.bootstrap import bootstrap, issue_credentials
from service.vault.client import VaultClient
from service.vault.session import transit_session
from service.web.metrics import Metrics

HERE = Path(__file__).resolve().parent
SMALL = 1_000
CONCURRENCY = 4  # calls at once
RUNS = 4  # alternating runs per store
PARALLEL = 4  # the importer's Transit calls at once (its default)
TARGET_RATE, TARGET_RSS, TARGET_P99 = 4_000.0, 250.0, 1.2
ENGINES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
SUMMARY = re.compile(r"\((\d+) rows/s, (\d+) Transit calls\)")


@dataclass(frozen=True)
class Figures:
    engine: str
    accounts: int
    import_rate: float  # accounts/s, wall clock of the importer process
    transit_per_account: float
    rss_mb: float
    cpu_ms: float  # the importer's CPU per account
    small: tuple[float, float]  # whole-call p50, p99 ms with SMALL accounts
    large: tuple[float, float]  # with `accounts`
    bytes_per_account: float
    failed_calls: int


def log(message: str) -> None:
    print(f"bench scale: {message}", file=sys.stderr, flush=True)


def hmac_bound(settings: Settings, items: int) -> float:
    """Vault's Transit HMAC items/s alone, in the importer's calls: ITEMS_PER_CALL inputs,
    PARALLEL at once."""

    async def run() -> float:
        async with transit_session(settings, Metrics(), threads=PARALLEL) as transit:
            (canary,) = await transit.hmac([b"bench"])
            version = int(canary.split(":")[1][1:])
            gate = asyncio.Semaphore(PARALLEL)

            async def one(start: int) -> None:
                batch = [f"acctno:{i:08d}".encode() for i in range(start, start + ITEMS_PER_CALL)]
                async with gate:
                    await transit.hmac(batch, key_version=version)

            began = time.monotonic()
            await asyncio.gather(*(one(s) for s in range(0, items, ITEMS_PER_CALL)))
            return items / (time.monotonic() - began)

    return asyncio.run(run())


@dataclass(frozen=True)
class Imported:
    seconds: float
    transit_calls: int
    rss_mb: float
    cpu_s: float  # the importer's own CPU (user + system)
    added: int


def run_import(
    env: dict[str, str], path: Path, cwd: Path, *, prefix: Sequence[str] = ()
) -> Imported:
    """One ``accounts import``. Its peak RSS is the process's own VmHWM and its CPU time
    /proc's, read every 0.1 s until it exits (``wait4``'s ``ru_maxrss`` would count the
    bench process it was forked from). ``prefix``: a command that runs it (a profiler;
    then the figures are the profiler's)."""
    out = cwd / f"{path.stem}.out"
    peak, cpu = 0, 0.0
    with out.open("w") as stdout:
        began = time.monotonic()
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "service", "accounts", "import", str(path)],
            cwd=cwd,
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
        while process.poll() is None:
            peak = max(peak, _hwm_kb(process.pid))
            cpu = max(cpu, _cpu_s(process.pid))
            time.sleep(0.1)
        seconds = time.monotonic() - began
    said = out.read_text()
    if process.returncode != 0:
        raise RuntimeError(
            f"accounts import {path.name} exited {process.returncode}: {said[-500:]}"
        )
    match = SUMMARY.search(said)
    added = re.search(r"rows: (\d+) added", said)
    assert match and added, said[-500:]
    return Imported(seconds, int(match.group(2)), peak / 1024, cpu, int(added.group(1)))


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0  # exited meanwhile
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _hwm_kb(pid: int) -> int:
    try:
        for text in Path(f"/proc/{pid}/status").read_text().splitlines():
            if text.startswith("VmHWM:"):
                return int(text.split()[1])
    except (OSError, ValueError):
        pass  # exited meanwhile
    return 0


def calls(
    webhook: ServiceProcess,
    token: str,
    population: int,
    count: int,
) -> tuple[list[float], int]:
    """``count`` whole calls, CONCURRENCY at once, each as an account drawn from the first
    ``population``: (each call's ms, calls that did not find their account)."""
    chosen = [random.randrange(population) for _ in range(count)]
    durations: list[float] = []
    failed = 0
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal failed
        _, _, number, last4, pin, _ = accounts_file.row(i)
        heard: list[str] = []
        with httpx.Client(timeout=30) as client:
            began = time.monotonic()
            result = Caller(
                webhook.url,
                token,
                client,
                say=heard.append,
                caller=f"+1666{secrets.randbelow(10**7):07d}",
                identify=number,
            ).play([last4, pin])
            took = (time.monotonic() - began) * 1000
        with lock:
            durations.append(took)
            if not (
                result.completed
                and heard
                and heard[-1].startswith("Thank you.")
                and accounts_file.label(i) in heard[-1]
            ):
                failed += 1

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, chosen))
    return durations, failed


def p50_p99(durations: list[float]) -> tuple[float, float]:
    ordered = sorted(durations)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def store_bytes(env: dict[str, str]) -> int:
    if "STORE_URL" in env:
        with psycopg.connect(env["STORE_URL"]) as db:
            row = db.execute("SELECT pg_database_size(current_database())").fetchone()
            assert row is not None
            return int(row[0])
    path = Path(env["STORE_PATH"])
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


@contextmanager
def services(
    env_for: dict[str, dict[str, str]],
    log_dir: Path,
) -> Iterator[tuple[ServiceProcess, str]]:
    token = secrets.token_urlsafe(24)
    (log_dir / "twilio").write_text(token)
    backend_port, webhook_port = free_port(), free_port()
    backend = ServiceProcess(
        "backend", backend_port, {**env_for["backend"], "BACKEND_PORT": str(backend_port)}, log_dir
    )
    webhook = ServiceProcess(
        "webhook",
        webhook_port,
        {
            **env_for["webhook"],
            "WEBHOOK_PORT": str(webhook_port),
            "BACKEND_URL": f"http://127.0.0.1:{backend_port}",
            "TWILIO_AUTH_TOKEN_FILE": str(log_dir / "twilio"),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{webhook_port}",
        },
        log_dir,
    )
    try:
        backend.start()
        webhook.start()
        wait_http(f"{webhook.url}/readyz", timeout=30)
        yield webhook, token
    finally:
        webhook.stop()
        backend.stop()


def measure_engine(
    engine: str,
    stores: tuple[dict[str, str], dict[str, str]],
    roles: dict[str, dict[str, str]],
    n: int,
    files: tuple[Path, Path],
    work: Path,
    count: int,
) -> Figures:
    """Two stores, SMALL and ``n`` accounts, each served by its own backend and webhook;
    their calls alternate (A B A B ...), so that the load of this shared machine falls on
    both alike."""
    envs = [{role: {**env, **store} for role, env in roles.items()} for store in stores]
    dirs = [work / "small", work / "large"]
    for directory in dirs:
        directory.mkdir(parents=True, exist_ok=True)
    run_import(envs[0]["backend"], files[0], dirs[0])
    run_import(envs[1]["backend"], files[0], dirs[1])
    before = store_bytes(stores[1])
    done = run_import(envs[1]["backend"], files[1], dirs[1])
    log(
        f"{engine}: imported {done.added} in {done.seconds:.1f} s "
        f"({done.added / done.seconds:.0f}/s), {done.transit_calls} Transit calls, peak "
        f"RSS {done.rss_mb:.0f} MB, CPU {done.cpu_s * 1000 / done.added:.3f} ms/account"
    )
    grown = store_bytes(stores[1]) - before
    log(f"{engine}: store grew {grown / max(done.added, 1):.0f} bytes per account")
    durations: list[list[float]] = [[], []]
    failed = 0
    with services(envs[0], dirs[0]) as small, services(envs[1], dirs[1]) as large:
        sides = ((small, SMALL), (large, n))
        for (webhook, token), population in sides:
            calls(webhook, token, population, 50)  # warm up
        for _ in range(RUNS):
            for side, ((webhook, token), population) in enumerate(sides):
                took, missed = calls(webhook, token, population, count // RUNS)
                durations[side] += took
                failed += missed
    small_p, large_p = p50_p99(durations[0]), p50_p99(durations[1])
    log(
        f"{engine}: whole call p50/p99 {SMALL} accounts {small_p[0]:.1f}/{small_p[1]:.1f} ms, "
        f"{n} accounts {large_p[0]:.1f}/{large_p[1]:.1f} ms"
    )
    added = max(done.added, 1)
    return Figures(
        engine,
        n,
        done.added / done.seconds,
        done.transit_calls / added,
        done.rss_mb,
        done.cpu_s * 1000 / added,
        small_p,
        large_p,
        grown / added,
        failed,
    )


def run(quick: bool, work: Path, n: int, engines: Sequence[str]) -> tuple[list[Figures], float]:
    count = 400 if quick else 1_000
    shutil.rmtree(work, ignore_errors=True)  # a previous run's stores and cluster
    work.mkdir(parents=True)
    files = (
        accounts_file.write(work / "first.csv", SMALL),
        accounts_file.write(work / "rest.csv", n - SMALL, start=SMALL),
    )
    with ExitStack() as exits:
        vault = DevVault.start(work / "vault")
        exits.callback(vault.stop)
        admin = VaultClient(vault.addr, vault.root_token, timeout=10)
        bootstrap(admin)
        roles = {}
        for role, creds in issue_credentials(admin, ["ivr-webhook", "ivr-backend"]).items():
            creds.write(work / role)
            roles[role.removeprefix("ivr-")] = {
                "PATH": os.environ.get("PATH", ""),
                "VAULT_ADDR": vault.addr,
                "VAULT_ROLE_ID_FILE": str(work / role / "role_id"),
                "VAULT_SECRET_ID_FILE": str(work / role / "secret_id"),
                "BACKEND_TOKEN_FILE": str(work / "backend-token"),
                "LOG_FORMAT": "json",
                "HOME": str(work),
            }
        (work / "backend-token").write_text(secrets.token_urlsafe(24))
        bound = hmac_bound(
            Settings.from_environ({**roles["backend"], "STORE_PATH": str(work / "unused.sqlite3")}),
            200_000,
        )
        log(f"Vault alone: {bound:.0f} HMAC items/s")
        figures = []
        for engine in engines:
            if engine == "sqlite":
                stores = (
                    {"STORE_PATH": str(work / "sqlite" / "small.sqlite3")},
                    {"STORE_PATH": str(work / "sqlite" / "large.sqlite3")},
                )
            else:
                postgres = LocalPostgres(work / "pg")
                exits.callback(postgres.stop)
                postgres.start()
                urls = [postgres.new_database(name) for name in ("small", "large")]
                for url in urls:
                    migrate_store(Settings.from_environ({"STORE_URL": url}).store)
                stores = ({"STORE_URL": urls[0]}, {"STORE_URL": urls[1]})
            name = ENGINES[engine]
            figures.append(
                measure_engine(name, stores, roles, n, files, work / name.lower(), count)
            )
    return figures, bound


def _size(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def targeted(figures: list[Figures]) -> Figures:
    """The PostgreSQL figures (the engine the targets name), else the last."""
    return next((f for f in figures if f.engine == "PostgreSQL"), figures[-1])


def line(figures: list[Figures]) -> str:
    """The summary line, of :func:`targeted`'s figures."""
    f = targeted(figures)
    return (
        f"scale: accounts {f.accounts} import {f.import_rate:.0f}/s rss {f.rss_mb:.0f} MB "
        f"lookup p99 1k {f.small[1]:.1f} ms {_size(f.accounts)} {f.large[1]:.1f} ms"
    )


def section(figures: list[Figures], bound: float, *, quick: bool, loadavg: float) -> str:
    n = figures[-1].accounts
    rows = [
        "## Accounts at scale",
        "",
        f"`{'BENCH_QUICK=1 ' if quick else ''}python -m bench.scale` (also run by "
        f"`make bench`): {n:,} generated accounts (one caller number each) imported by "
        "`ivr-vault accounts import` into each engine, whole calls (account number, card, "
        f"PIN; {CONCURRENCY} at once, each checked to find its account) with {SMALL:,} and "
        f"with {n:,} accounts in the store. 1-minute load average {loadavg:.1f} at the end.",
        "",
        f"Vault alone: **{bound:,.0f} Transit HMAC items/s** ({ITEMS_PER_CALL} per call, "
        f"{PARALLEL} calls at once), so at most {bound / 4:,.0f} accounts/s at 4 inputs "
        "per account: the bound on any import on this machine.",
        "",
        "| engine | import accounts/s | Transit calls per account | importer peak RSS | "
        "importer CPU per account | "
        f"whole call p50 / p99, {SMALL:,} accounts | p50 / p99, {n:,} | p99 ratio | "
        "store bytes per account | calls not found |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        rows.append(
            f"| {f.engine} | {f.import_rate:,.0f} | {f.transit_per_account:.3f} | "
            f"{f.rss_mb:.0f} MB | {f.cpu_ms:.3f} ms | {f.small[0]:.1f} / {f.small[1]:.1f} ms | "
            f"{f.large[0]:.1f} / {f.large[1]:.1f} ms | {f.large[1] / f.small[1]:.2f} | "
            f"{f.bytes_per_account:,.0f} | {f.failed_calls} |"
        )
    pg = targeted(figures)
    rows += [
        "",
        f"Targets: import ≥ {TARGET_RATE:,.0f} accounts/s on PostgreSQL (or the measured "
        f"bound): {pg.import_rate:,.0f}/s against a Vault bound of {bound / 4:,.0f}/s; "
        f"importer peak RSS < {TARGET_RSS:.0f} MB: {pg.rss_mb:.0f} MB; whole-call p99 with "
        f"{n:,} accounts within {TARGET_P99}x of {SMALL:,}: {pg.large[1] / pg.small[1]:.2f}x.",
        "",
        f"What bounds the import: Vault's HMACs alone allow {bound / 4:,.0f} accounts/s, "
        f"and the importer's own CPU ({pg.cpu_ms:.3f} ms per account: reading, checking, "
        "binding each verifier with its salt, building the SQL) "
        f"{1000 / max(pg.cpu_ms, 1e-9):,.0f}/s on a core of its own; here the importer, "
        "Vault and the store share two cores (and whatever else runs: the load average "
        "above), so the rate is below both.",
        "",
    ]
    return "\n".join(rows)


def measure(quick: bool, out_dir: Path) -> str:
    """Run the section, write ``out_dir/scale.md``; the summary line."""
    n = int(os.environ.get("BENCH_SCALE_ACCOUNTS", 100_000 if quick else 1_000_000))
    engines = os.environ.get("BENCH_SCALE_ENGINES", "sqlite,postgresql").split(",")
    unknown = set(engines) - set(ENGINES)
    if unknown or not engines:
        raise SystemExit(f"BENCH_SCALE_ENGINES: expected some of {','.join(ENGINES)}")
    figures, bound = run(quick, HERE / ".work" / "scale", n, engines)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scale.md").write_text(
        section(figures, bound, quick=quick, loadavg=os.getloadavg()[0]), encoding="utf-8"
    )
    return line(figures)


def main() -> int:
    quick = bool(os.environ.get("BENCH_QUICK"))
    print(measure(quick, HERE / ".work" / "quick" if quick else HERE), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
