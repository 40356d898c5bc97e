"""Failure drills on ``make run-ha``'s topology, started as a developer starts it
(``ivr-vault dev --ha`` in its own directory, on free ports): a 3-node OpenBao cluster,
PostgreSQL, two backends, two webhooks behind Caddy. Under a steady load of whole
signed calls through Caddy (every answer checked), one piece dies at a time:

- the Vault leader, SIGKILLed: the services fail over to the other nodes, a new leader is
  elected, the launcher restarts and unseals the dead node, it rejoins;
- a backend, SIGKILLed: lookups go to the other one (those that died with it are sent
  again, with the same Idempotency-Key), the launcher restarts it;
- a webhook, SIGTERMed (a rolling restart): /readyz turns 503 at once, Caddy stops sending
  to it, it finishes what it holds and exits, the launcher starts its replacement.

Then the silent faults (docs/past-one-machine.md, silent faults): one piece at a time is paused
(SIGSTOP) for 10 s and
resumed, as a frozen or partitioned host would be, answering nothing and resetting nothing:
the Vault leader, a backend, a webhook behind Caddy. The load then comes from several
numbers, each calling its own account, and once the fault is on, wrong PINs on accounts of
their own; after each, the store must hold exactly what was decided (lockout exactness, one
lookup per call: tests/support/drills.py), and no webhook request may take past its budget.

PostgreSQL is the store (make run-ha's own, persistent under .dev/ha/). Not one call may
fail. Then a burst of concurrent wrong PINs, spread over both webhooks
and both backends, still locks the card after exactly LOCKOUT_THRESHOLD compared PINs.
Each drill prints its figures (calls, failed, p50/p99 of the webhook requests sent during
it, and the time to recover); docs/past-one-machine.md quotes them.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.devtools.caller import Caller
from service.settings import Settings
from service.webhook import twiml as texts
from tests.support.demo import FOUND
from tests.support.devrun import (
    READY_LINE,
    DevRun,
    alive,
    base_env,
    descendants,
    start_dev,
    stop_dev,
)
from tests.support.drills import (
    Drilled,
    Moment,
    assert_no_call_lost,
    assert_store_exact,
    fault_drill,
)
from tests.support.load import CallLoad, Failure, Figures
from tests.support.tools import require
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(900)

WARM_S = 3.0  # load before the failure
AFTER_S = 3.0  # load after recovery
RECOVER_WITHIN_S = 60.0
PAUSE_S = 10.0  # how long a paused piece stays silent
DRILLS = itertools.count()  # each drill's own accounts and cards, even after one failed
FIGURES: dict[str, dict[str, Any]] = {}
NUMBER = "86420975"  # the account number of the account the burst drill adds


@dataclass
class Ha:
    run: DevRun

    @property
    def dev(self) -> Path:
        return self.run.state

    def processes(self) -> list[dict[str, Any]]:
        processes: list[dict[str, Any]] = json.loads((self.dev / "cluster.json").read_text())[
            "processes"
        ]
        return processes

    def member(self, name: str) -> dict[str, Any]:
        return next(p for p in self.processes() if p["name"] == name)

    def role(self, role: str) -> list[dict[str, Any]]:
        return [p for p in self.processes() if p["role"] == role]

    @property
    def proxy_url(self) -> str:
        url: str = self.member("proxy")["url"]
        return url

    @property
    def twilio_token(self) -> str:
        return (self.dev / "twilio-auth-token").read_text().strip()

    def vault_env(self) -> dict[str, str]:
        return dict(re.findall(r"^export (\w+)=(\S+)$", (self.dev / "vault.env").read_text(), re.M))

    def leader(self) -> dict[str, Any] | None:
        for node in self.role("vault"):
            if status(f"{node['url']}/v1/sys/health") == 200:
                return node
        return None

    def ready(self, name: str) -> bool:
        return status(f"{self.member(name)['url']}/readyz") == 200

    def backend_settings(self) -> Settings:
        """The backend's identity and the store, for provisioning accounts."""
        env = self.vault_env()
        return Settings.from_environ(
            {
                "VAULT_ADDR": env["VAULT_ADDR"],
                "STORE_URL": env["STORE_URL"],
                "VAULT_ROLE_ID_FILE": str(self.dev / "ivr-backend" / "role_id"),
                "VAULT_SECRET_ID_FILE": str(self.dev / "ivr-backend" / "secret_id"),
            }
        )

    def logged_since(self, role: str, text: str, since_wall: float) -> list[float]:
        """Wall-clock times of the log lines of every ``role`` process that contain
        ``text``, from ``since_wall`` on."""
        found = []
        for path in (self.dev / "ha" / "logs").glob(f"{role}-*.stderr.log"):
            for line in path.read_text(errors="replace").splitlines():
                if text in line:
                    stamp = datetime.fromisoformat(line.split(" ", 1)[0].replace("Z", "+00:00"))
                    if stamp.timestamp() >= since_wall:
                        found.append(stamp.timestamp())
        return sorted(found)


def status(url: str, timeout: float = 2) -> int | None:
    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError:
        return None


def replaced(ha: Ha, name: str, pid: int) -> Callable[[], bool]:
    """The launcher started ``name`` again (a new pid in cluster.json)."""
    return lambda: ha.member(name)["pid"] not in (None, pid)


def report(drill: str, figures: Figures, **recovery: float) -> None:
    FIGURES[drill] = {
        "calls": figures.calls,
        "failed": figures.failed,
        "requests": figures.requests,
        "p50_ms": round(figures.p50_ms, 1),
        "p99_ms": round(figures.p99_ms, 1),
        "max_ms": round(figures.max_ms),
        **{k: round(v, 2) for k, v in recovery.items()},
    }
    print(
        f"\ndrill {drill}: {figures}; "
        + ", ".join(f"{k.replace('_', ' ')} {v:.2f} s" for k, v in recovery.items())
    )


@pytest.fixture(scope="module")
def ha() -> Iterator[Ha]:
    require("caddy")
    # Not under pytest's own temporary directory (mode 0700): run as root, PostgreSQL runs
    # as the postgres user, which must pass through to its data in .dev/ha/.
    cwd = Path(tempfile.mkdtemp(prefix="ivr-run-ha-"))
    os.chmod(cwd, 0o711)
    run = start_dev(cwd, ha=True)
    try:
        started = time.monotonic()
        run.wait_for(READY_LINE, timeout=240)
        print(f"\nmake run-ha ready in {time.monotonic() - started:.1f} s")
        yield Ha(run)
    finally:
        children = list(descendants(run.process.pid))
        stop_dev(run)
        left = [pid for pid in children if alive(pid)]
        print(f"\ndrill figures: {json.dumps(FIGURES)}")
        shutil.rmtree(cwd, ignore_errors=True)
        assert not left, f"processes left after Ctrl-C: {left}"


def test_the_topology_and_its_files(ha: Ha) -> None:
    roles = [p["role"] for p in ha.processes()]
    assert sorted(roles) == sorted(
        ["vault"] * 3 + ["postgres"] + ["backend"] * 2 + ["webhook"] * 2 + ["proxy"]
    )
    for process in ha.processes():
        assert alive(process["pid"]), process
        scheme = "postgresql" if process["role"] == "postgres" else "http"
        assert process["url"].startswith(f"{scheme}://127.0.0.1:"), process
    env = ha.vault_env()
    assert env["VAULT_ADDR"].split(",") == [n["url"] for n in ha.role("vault")]
    # The store the backends share: PostgreSQL, its password in a file, not in the URL.
    store = urlsplit(env["STORE_URL"])
    assert (store.scheme, store.password) == ("postgresql", None)
    assert store.port == urlsplit(ha.member("postgres")["url"]).port
    assert "passfile=" in store.query
    # `ivr-vault call` as printed, unchanged but for the proxy's port.
    called = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "call",
            "--card",
            "1234",
            "--pin",
            "4321",
            "--url",
            ha.proxy_url,
        ],
        cwd=ha.run.cwd,
        env=base_env(ha.run.cwd),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert called.returncode == 0, called.stderr
    assert FOUND in called.stdout
    # The operator CLI in the checkout finds the cluster by itself (.dev/vault.env and the
    # key-admin identity in .dev/), no VAULT_ADDR.
    keys = subprocess.run(
        [sys.executable, "-m", "service", "keys", "status", "--json"],
        cwd=ha.run.cwd,
        env=base_env(ha.run.cwd),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert keys.returncode == 0, keys.stderr
    assert env["VAULT_ADDR"] in keys.stderr  # it says which Vault
    # Only /voice* is proxied: the webhooks' health and metrics stay internal.
    assert status(f"{ha.proxy_url}/readyz") == 404


def test_its_private_files_are_private(ha: Ha) -> None:
    """docs/security.md, "private files through links": ``make run-ha`` left the role folders at
    0755 and the store files at
    0644. Every secret it writes in .dev/ is 0600, every role folder 0700; a SQLite store
    there (``make run``'s, or one the CLI opens) too, with its ``-wal``/``-shm``."""
    opened = subprocess.run(  # the CLI opening .dev/accounts.sqlite3 creates it
        [sys.executable, "-m", "service", "store", "migrate"],
        cwd=ha.run.cwd,
        env={**base_env(ha.run.cwd), "STORE_URL": "sqlite:///.dev/accounts.sqlite3"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert opened.returncode == 0, opened.stderr
    modes = {
        str(path.relative_to(ha.dev)): stat.S_IMODE(path.stat().st_mode)
        for path in [
            *ha.dev.glob("ivr-*"),
            *ha.dev.glob("ivr-*/*"),
            *ha.dev.glob("accounts.sqlite3*"),
            ha.dev / "vault.env",
            ha.dev / "twilio-auth-token",
            ha.dev / "backend-token",
            ha.dev / "cluster.json",
        ]
    }
    roles = ["ivr-backend", "ivr-backup", "ivr-keyadmin", "ivr-webhook"]
    assert sorted(name for name in modes if "/" not in name and name.startswith("ivr-")) == roles
    assert "accounts.sqlite3" in modes
    wrong = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (0o700 if name in roles else 0o600)
    }
    assert not wrong


def test_sigkill_the_vault_leader(ha: Ha) -> None:
    with CallLoad(ha.proxy_url, ha.twilio_token) as load:
        time.sleep(WARM_S)
        leader = ha.leader()
        assert leader is not None
        started = load.mark()
        os.kill(leader["pid"], signal.SIGKILL)
        elected = wait_until(
            lambda: (ha.leader() or leader)["name"] != leader["name"],
            what="a new leader",
            since=started,
            timeout=RECOVER_WITHIN_S,
        )
        wait_until(
            replaced(ha, leader["name"], leader["pid"]),
            what="the killed node started again",
            since=started,
            timeout=RECOVER_WITHIN_S,
        )
        rejoined = wait_until(
            lambda: status(f"{leader['url']}/v1/sys/health") in (200, 429),
            what="the killed node unsealed, in the cluster",
            since=started,
            timeout=RECOVER_WITHIN_S,
        )
        time.sleep(AFTER_S)
        figures = load.figures(started)
    report(
        "vault leader SIGKILL",
        figures,
        new_leader_after=elected,
        killed_node_back_in_the_cluster_after=rejoined,
    )
    assert figures.failed == 0, load.failures[:5]
    assert figures.calls >= 20


def replica_drill(
    ha: Ha, name: str, sig: signal.Signals, *, unready_first: bool = False
) -> tuple[Figures, list[Failure]]:
    """Under load, ``sig`` to one replica; the load goes on until the launcher's
    replacement is ready, and AFTER_S more. With ``unready_first``: its /readyz must turn
    503 at once (the drain), while it still serves."""
    victim = ha.member(name)
    recovery: dict[str, float] = {}
    with CallLoad(ha.proxy_url, ha.twilio_token) as load:
        time.sleep(WARM_S)
        started = load.mark()
        os.kill(victim["pid"], sig)
        if unready_first:
            recovery["unready_after"] = wait_until(
                lambda: status(f"{victim['url']}/readyz") != 200,
                what=f"{name} unready",
                since=started,
                timeout=5,
            )
        wait_until(
            replaced(ha, name, victim["pid"]),
            what=f"{name} started again",
            since=started,
            timeout=RECOVER_WITHIN_S,
        )
        recovery["replacement_ready_after"] = wait_until(
            lambda: ha.ready(name), what=f"{name} ready", since=started, timeout=RECOVER_WITHIN_S
        )
        time.sleep(AFTER_S)
        figures = load.figures(started)
    report(f"{ha.member(name)['role']} {sig.name}", figures, **recovery)
    return figures, load.failures


def test_sigkill_a_backend(ha: Ha) -> None:
    figures, failures = replica_drill(ha, "backend-1", signal.SIGKILL)
    assert figures.failed == 0, failures[:5]
    assert figures.calls >= 20


def test_sigterm_a_webhook_is_a_rolling_restart(ha: Ha) -> None:
    figures, failures = replica_drill(ha, "webhook-1", signal.SIGTERM, unready_first=True)
    assert figures.failed == 0, failures[:5]
    assert figures.calls >= 20


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_a_burst_of_wrong_pins_locks_at_exactly_the_threshold(ha: Ha) -> None:
    """40 concurrent calls with wrong PINs for one card, each from its own number (so no
    caller is cut off first), through Caddy to both webhooks and both backends."""
    # `accounts add` in the checkout, no VAULT_ADDR: the cluster, the backend's identity
    # and the PostgreSQL store, all from .dev/.
    added = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "accounts",
            "add",
            "--account",
            "AC55500011",
            "--balance",
            "3.10",
        ],
        input=f"{NUMBER}\n5678\n7351\n",
        cwd=ha.run.cwd,
        env=base_env(ha.run.cwd),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    backends = [b["url"] for b in ha.role("backend")]
    wrong = {b: metric(b, "ivr_wrong_pins_total") for b in backends}
    looked = {b: metric(b, "ivr_lookups_total") for b in backends}
    locks = {b: metric(b, "ivr_lockouts_total", kind="card") for b in backends}

    def guess(i: int) -> str:
        heard: list[str] = []
        with httpx.Client(timeout=15) as client:
            Caller(
                ha.proxy_url,
                ha.twilio_token,
                client,
                say=heard.append,
                caller=f"+1555010{i:04d}",
                identify=NUMBER,
            ).play(["5678", f"{1000 + i:04d}"])
        return heard[-1]

    with ThreadPoolExecutor(max_workers=40) as pool:
        heard = list(pool.map(guess, range(40)))
    assert set(heard) == {texts.NOT_FOUND}  # wrong, locked: the same words
    compared = sum(metric(b, "ivr_wrong_pins_total") - wrong[b] for b in backends)
    per_backend = {b: metric(b, "ivr_lookups_total") - looked[b] for b in backends}
    locked = sum(metric(b, "ivr_lockouts_total", kind="card") - locks[b] for b in backends)
    FIGURES["wrong PIN burst"] = {
        "calls": 40,
        "compared": compared,
        "locks": locked,
        "lookups per backend": list(per_backend.values()),
    }
    print(
        f"\ndrill wrong PIN burst: 40 calls, {compared:.0f} PINs compared, "
        f"{locked:.0f} lock, lookups per backend {list(per_backend.values())}"
    )
    assert compared == Settings().lockout_threshold and locked == 1
    assert all(n > 0 for n in per_backend.values()), per_backend
    # And the right PIN, now: locked (the lock holds across both backends).
    with httpx.Client(timeout=15) as client:
        last: list[str] = []
        Caller(
            ha.proxy_url,
            ha.twilio_token,
            client,
            say=last.append,
            caller="+15550109999",
            identify=NUMBER,
        ).play(["5678", "7351"])
    assert last[-1] == texts.NOT_FOUND


def pause_drill(
    ha: Ha, drill: str, victim: dict[str, Any], *, detected: Moment | None, recovered: Moment
) -> Drilled:
    """SIGSTOP ``victim`` for PAUSE_S under the mixed load, then SIGCONT
    (tests/support/drills.py: the load, the figures, the store's checks)."""
    n = next(DRILLS)
    drilled = fault_drill(
        url=ha.proxy_url,
        auth_token=ha.twilio_token,
        settings=ha.backend_settings(),
        store_url=ha.vault_env()["STORE_URL"],
        cards_from=2000 + 64 * n,
        prefix=f"AC9{n:02d}",
        begin=lambda: os.kill(victim["pid"], signal.SIGSTOP),
        end=lambda: os.kill(victim["pid"], signal.SIGCONT),
        hold_s=PAUSE_S,
        detected=detected,
        recovered=recovered,
    )
    FIGURES[drill] = drilled.summary()
    print(
        f"\ndrill {drill}: {drilled.figures}; detected after {drilled.detect}, "
        f"recovered {drilled.recover} s after"
    )
    return drilled


def first_logged(ha: Ha, role: str, text: str) -> Moment:
    """Seconds from the moment given to the first such log line after it."""

    def seconds(_monotonic: float, wall: float) -> float | None:
        stamps = ha.logged_since(role, text, wall)
        return stamps[0] - wall if stamps else None

    return seconds


def test_sigstop_the_vault_leader(ha: Ha) -> None:
    leader = ha.leader()
    assert leader is not None

    def elected(started: float, _wall: float) -> float | None:
        for node in ha.role("vault"):
            if (
                node["name"] != leader["name"]
                and status(f"{node['url']}/v1/sys/health", timeout=0.5) == 200
            ):
                return time.monotonic() - started
        return None

    def back(healed: float, _wall: float) -> float | None:
        answered = status(f"{leader['url']}/v1/sys/health", timeout=0.5) in (200, 429)
        return time.monotonic() - healed if answered else None

    assert_no_call_lost(
        pause_drill(ha, "vault leader SIGSTOP 10 s", leader, detected=elected, recovered=back)
    )


def test_sigstop_a_backend(ha: Ha) -> None:
    assert_no_call_lost(
        pause_drill(
            ha,
            "backend SIGSTOP 10 s",
            ha.member("backend-1"),
            detected=first_logged(ha, "webhook", "address failed; trying the others"),
            recovered=first_logged(ha, "webhook", "address answers again"),
        )
    )


# Caddy's active check of a webhook's /readyz times out after 3 s (proxy/Caddyfile.ha:
# not less, since /readyz itself may take its 2 s while Vault is slow, and a shorter
# timeout would take every webhook out at once), every 0.5 s; a request in flight on a
# frozen webhook waits for it (Caddy 2.6 cannot send a POST again: its retries lose the
# body). So a frozen webhook can cost the calls that reach it within that bound; after it,
# none.
PROXY_NOTICES_WITHIN_S = 3.5 + 0.5  # and a margin for this loaded machine


def test_sigstop_a_webhook_behind_the_proxy(ha: Ha) -> None:
    drill = "webhook SIGSTOP 10 s"

    def back(healed: float, _wall: float) -> float | None:
        return time.monotonic() - healed if ha.ready("webhook-1") else None

    paused = pause_drill(ha, drill, ha.member("webhook-1"), detected=None, recovered=back)
    # Detected, as the load saw it: the last request that went to the frozen webhook.
    FIGURES[drill]["time_to_detect"] = max((t for t, _ in paused.over_budget), default=0.0)
    print(
        f"drill {drill}: requests held by the frozen webhook (sent at s, took ms): "
        f"{paused.over_budget}"
    )
    late = [f for f in paused.failures if f.at - paused.started > PROXY_NOTICES_WITHIN_S]
    assert not late, late[:5]
    assert all(t <= PROXY_NOTICES_WITHIN_S for t, _ in paused.over_budget), paused.over_budget
    assert_store_exact(paused)
