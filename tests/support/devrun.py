"""``make run`` (``python -m service dev``) as a developer runs it, for the tests: a
subprocess in its own directory and process group, on free ports, its output read as it
comes; and what the tests look at around it (its descendants, ``ivr-vault call``)."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from service.devtools.devstack import free_port

READY_LINE = "Ctrl-C stops everything."


@dataclass
class DevRun:
    process: subprocess.Popen[str]
    cwd: Path
    env: dict[str, str]
    webhook_port: int
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @property
    def state(self) -> Path:
        return self.cwd / ".dev"

    def pump(self) -> None:
        """Drain stdout (the services print there too) so that no one blocks on a pipe."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"dev exited ({self.process.poll()}) before {text!r}:\n"
                    + "\n".join(self.lines[-40:])
                )
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} within {timeout}s:\n" + "\n".join(self.lines[-40:]))

    def output(self) -> str:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return "\n".join(self.lines)
            if line is not None:
                self.lines.append(line)


def base_env(cwd: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "LANG": "C.UTF-8",
        **extra,
    }


def descendants(pid: int) -> dict[int, list[str]]:
    """pid -> argv of every live process below ``pid``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, list[str]] = {}
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current and child not in found:
                try:
                    raw = Path(f"/proc/{child}/cmdline").read_bytes()
                except OSError:
                    continue
                found[child] = raw.decode(errors="replace").split("\0")
                frontier.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# An account the tests add with `accounts add` (label AC55556666, card 5555, PIN 7351):
# its account number, and the lines `accounts add` reads.
ADDED_NUMBER = "24680135"
ADDED_STDIN = f"{ADDED_NUMBER}\n5555\n7351\n"


def call(
    run: DevRun, pin: str, card: str = "1234", *, number: str | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    """``ivr-vault call`` from the dev directory, exactly as printed (plus --url): on the
    registered-phone path (the demo's number), or with ``number`` typed."""
    who = ["--account-number", number] if number else ["--registered"]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "call",
            *who,
            "--card",
            card,
            "--pin",
            pin,
            "--url",
            f"http://127.0.0.1:{run.webhook_port}",
        ],
        cwd=run.cwd,
        env=base_env(run.cwd, **extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def vault_env(run: DevRun) -> dict[str, str]:
    text = (run.state / "vault.env").read_text()
    return dict(re.findall(r"^export (\w+)=(\S+)$", text, re.M))


def start_dev(cwd: Path, *, sigint_ignored: bool = False, ha: bool = False, **extra: str) -> DevRun:
    """``ivr-vault dev`` (``ha``: ``dev --ha``, make run-ha) in ``cwd``, its stdout drained
    by a thread (see :meth:`DevRun.pump`)."""
    ports = {"WEBHOOK_PORT": str(free_port()), "BACKEND_PORT": str(free_port())}
    env = base_env(cwd, **{**ports, **extra})
    webhook_port = int(env["WEBHOOK_PORT"])
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "dev", *(["--ha"] if ha else [])],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own group, as in a terminal
        # As a shell's `ivr-vault dev &` starts it: SIGINT ignored, inherited.
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        if sigint_ignored
        else None,
    )
    run = DevRun(process, cwd, env, webhook_port)
    threading.Thread(target=run.pump, daemon=True).start()
    return run


def stop_dev(run: DevRun) -> None:
    """Ctrl-C, and if that does not do it, SIGKILL: a failed test leaves no stack behind."""
    if run.process.poll() is None:
        run.process.send_signal(signal.SIGINT)
        try:
            run.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait()


def ivr_vault(
    run: DevRun,
    *args: str,
    stdin: str = "",
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """Another ``ivr-vault`` command in the dev directory (``accounts add``, ``backup``...),
    with only what the caller puts in its environment."""
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=run.cwd,
        env=base_env(run.cwd, **env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ctrl_c(run: DevRun) -> int:
    """SIGINT to the whole process group, as a terminal sends it; the exit status."""
    os.killpg(run.process.pid, signal.SIGINT)
    return run.process.wait(timeout=30)
