"""vault/audit-rotate.sh, as docker-compose.yml runs it, around a real OpenBao with its file
audit device: rotations while requests are in flight lose no audit entry, old logs are
pruned to AUDIT_KEEP, and SIGTERM stops the server with the script."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.devtools.devstack import dev_server_config, find_vault_binary, free_port
from service.vault.operator_init import DevKeyring, VaultServer
from tests.support.repo import ROOT

SCRIPT = ROOT / "vault" / "audit-rotate.sh"
PATH = "auth/token/lookup-self"  # what the test asks: audited, cheap, a request id each


@dataclass
class RotatedVault:
    process: subprocess.Popen[bytes]
    addr: str
    dir: Path
    token: str

    @property
    def audit_log(self) -> Path:
        return self.dir / "audit.log"

    def rotations(self) -> list[str]:
        return [
            line
            for line in (self.dir / "rotate.log").read_text().splitlines()
            if line.startswith("audit-rotate: ")
        ]

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("audit.log*"))


def start(directory: Path, *, max_bytes: int, keep: int, path: str | None = None) -> RotatedVault:
    port, cluster = free_port(), free_port()
    (directory / "data").mkdir(parents=True, mode=0o700)
    (directory / "server.hcl").write_text(
        dev_server_config(data_dir="data", port=port, cluster_port=cluster, audit_log="audit.log")
    )
    env = {
        "PATH": path or os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(directory),
        "AUDIT_LOG": str(directory / "audit.log"),
        "AUDIT_MAX_BYTES": str(max_bytes),
        "AUDIT_KEEP": str(keep),
        "AUDIT_CHECK_SECONDS": "0.05",
    }
    with (directory / "rotate.log").open("ab") as out:
        process = subprocess.Popen(
            ["/bin/sh", str(SCRIPT), find_vault_binary(), "server", "-config=server.hcl"],
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    addr = f"http://127.0.0.1:{port}"
    server = VaultServer(addr)
    try:
        server.wait_listening()
        token = server.open(DevKeyring(directory / "keys"), initialise_if_new=True).root_token
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    finally:
        server.close()
    return RotatedVault(process, addr, directory, token.reveal())


def stop(vault: RotatedVault) -> int:
    """SIGTERM to the script, as docker stop sends it; its exit status."""
    vault.process.send_signal(signal.SIGTERM)
    try:
        return vault.process.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(vault.process.pid, signal.SIGKILL)  # anything left behind


@pytest.fixture
def rotated(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RotatedVault]:
    max_bytes, keep = request.param
    vault = start(tmp_path / "vault", max_bytes=max_bytes, keep=keep)
    yield vault
    if vault.process.poll() is None:
        stop(vault)


def hammer(vault: RotatedVault, *, until: int, threads: int = 2, timeout: float = 90) -> list[str]:
    """Requests from ``threads`` clients at once until ``until`` rotations happened; the
    request id of each answer."""
    ids: list[str] = []
    lock = threading.Lock()
    done = threading.Event()

    def work() -> None:
        with httpx.Client(
            base_url=vault.addr, timeout=10, headers={"X-Vault-Token": vault.token}
        ) as client:
            while not done.is_set():
                answer = client.get(f"/v1/{PATH}")
                answer.raise_for_status()
                with lock:
                    ids.append(answer.json()["request_id"])

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + timeout
    try:
        while len(vault.rotations()) < until and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # more requests after the last rotation
    finally:
        done.set()
        for worker in workers:
            worker.join()
    assert len(vault.rotations()) >= until, vault.rotations()
    return ids


def audit_entries(files: list[Path]) -> list[dict[str, object]]:
    entries = []
    for path in files:
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if (entry.get("request") or {}).get("path") == PATH:
                entries.append(entry)
    return entries


@pytest.mark.parametrize("rotated", [(40_000, 1000)], indirect=True)
def test_rotation_while_requests_run_loses_no_entry(rotated: RotatedVault) -> None:
    ids = hammer(rotated, until=4)
    assert stop(rotated) == 0
    files = rotated.files()
    assert len(files) >= 5  # four rotated files and the live one
    entries = audit_entries(files)
    counted = Counter(
        (str((e["request"] or {})["id"]), e["type"])  # type: ignore[index]
        for e in entries
    )
    # A request and its answer write ~950 bytes of audit log together (169 requests filled
    # four 40 kB files on a loaded machine), so four rotations take at least ~130 of them;
    # "> 200" counted on the 0.3 s after the last rotation and failed under load.
    assert len(ids) == len(set(ids)) >= 4 * 40_000 // 1_200
    for kind in ("request", "response"):
        logged = [rid for rid, t in counted if t == kind]
        assert sorted(logged) == sorted(ids), kind  # every request, once, no stranger
    assert set(counted.values()) == {1}
    # The requests really straddle the rotations: each file holds some of them.
    per_file = [sum(1 for line in f.read_text().splitlines() if PATH in line) for f in files]
    assert sum(1 for n in per_file if n) >= 5, per_file
    # Each renamed file had reached the limit before it was renamed.
    assert all(f.stat().st_size >= 40_000 for f in files if f.name != "audit.log")


@pytest.mark.parametrize("rotated", [(20_000, 2)], indirect=True)
def test_old_logs_are_pruned_to_audit_keep(rotated: RotatedVault) -> None:
    hammer(rotated, until=5)
    assert stop(rotated) == 0
    kept = [f.name for f in rotated.files() if f.name != "audit.log"]
    newest = [line.split(" -> ")[1].split(" (")[0] for line in rotated.rotations()][-2:]
    assert sorted(kept) == sorted(Path(n).name for n in newest)
    assert (rotated.dir / "audit.log").exists()


def test_a_stop_during_a_rotation_lets_it_finish(tmp_path: Path) -> None:
    """SIGTERM while a rotation is under way (here: while its ``mv`` runs, made slow) waits
    for the rename to be logged and the old files pruned. Stopping from the trap at once left
    AUDIT_KEEP + 1 files, one of them never logged (a whole run's failure of the test above)."""
    tools = tmp_path / "bin"
    tools.mkdir()
    slow_mv = tools / "mv"
    slow_mv.write_text(f'#!/bin/sh\ntouch "{tmp_path}/mv-started"\nsleep 0.5\nexec /bin/mv "$@"\n')
    slow_mv.chmod(0o755)
    vault = start(
        tmp_path / "vault",
        max_bytes=2_000,
        keep=1,
        path=f"{tools}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    )
    try:
        hammer(vault, until=2)
        marker = tmp_path / "mv-started"
        marker.unlink(missing_ok=True)
        with httpx.Client(base_url=vault.addr, timeout=10) as client:
            deadline = time.monotonic() + 30
            while not marker.exists() and time.monotonic() < deadline:
                client.get(f"/v1/{PATH}", headers={"X-Vault-Token": vault.token})
        assert marker.exists()
    finally:
        assert stop(vault) == 0
    kept = [f.name for f in vault.files() if f.name != "audit.log"]
    logged = [line.split(" -> ")[1].split(" (")[0] for line in vault.rotations()]
    assert [Path(logged[-1]).name] == kept


@pytest.mark.parametrize("rotated", [(10**9, 10)], indirect=True)
def test_sigterm_stops_the_server_and_the_script(rotated: RotatedVault) -> None:
    assert httpx.get(f"{rotated.addr}/v1/sys/health", timeout=5).status_code == 200
    assert stop(rotated) == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{rotated.addr}/v1/sys/health", timeout=2)
    with pytest.raises(ProcessLookupError):
        os.killpg(rotated.process.pid, 0)  # nothing of the group is left


def test_the_script_ends_when_the_server_does(tmp_path: Path) -> None:
    """A server that exits by itself: the script exits with its status, no loop left."""
    done = subprocess.run(
        ["/bin/sh", str(SCRIPT), "sh", "-c", "sleep 0.3; exit 3"],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AUDIT_LOG": str(tmp_path / "audit.log"),
            "AUDIT_CHECK_SECONDS": "0.05",
        },
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 3
