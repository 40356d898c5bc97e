"""``make run`` (``python -m service dev``) as a developer runs it: a subprocess in its own
directory, on free ports, stopped with Ctrl-C. Everything it starts must stop with it."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from service.devtools.devstack import DevVault, free_port
from service.settings import Secret
from service.vault.client import VaultClient

READY_LINE = "Ctrl-C stops everything."
FOUND = "Thank you. Your account number is AC12345678 and your balance is 12.55"


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
                raise AssertionError(f"dev exited ({self.process.poll()}) before {text!r}:\n"
                                     + "\n".join(self.lines[-40:]))
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
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd),
            "LANG": "C.UTF-8", **extra}


@pytest.fixture
def start_dev(tmp_path: Path) -> Iterator[Callable[..., DevRun]]:
    runs: list[DevRun] = []

    def start(*, sigint_ignored: bool = False, **extra: str) -> DevRun:
        webhook_port, backend_port = free_port(), free_port()
        env = base_env(tmp_path, WEBHOOK_PORT=str(webhook_port),
                       BACKEND_PORT=str(backend_port), **extra)
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "dev"], cwd=tmp_path, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,  # its own group, as in a terminal
            # As a shell's `ivr-vault dev &` starts it: SIGINT ignored, inherited.
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
            if sigint_ignored else None)
        run = DevRun(process, tmp_path, env, webhook_port)
        threading.Thread(target=run.pump, daemon=True).start()
        runs.append(run)
        return run

    yield start
    for run in runs:  # a failed test must not leave a stack behind
        if run.process.poll() is None:
            run.process.send_signal(signal.SIGINT)
            try:
                run.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait()


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


def call(run: DevRun, pin: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """``ivr-vault call`` from the dev directory, exactly as printed (plus --url)."""
    return subprocess.run(
        [sys.executable, "-m", "service", "call", "--card", "1234", "--pin", pin,
         "--url", f"http://127.0.0.1:{run.webhook_port}"],
        cwd=run.cwd, env=base_env(run.cwd, **extra), capture_output=True, text=True,
        timeout=60, check=False)


def vault_env(run: DevRun) -> dict[str, str]:
    text = (run.state / "vault.env").read_text()
    return dict(re.findall(r"^export (\w+)=(\S+)$", text, re.M))


def test_dev_runs_the_whole_stack_and_ctrl_c_stops_it(start_dev: Callable[..., DevRun]) -> None:
    run = start_dev()
    run.wait_for(READY_LINE)
    out = run.output()
    webhook_url = f"http://127.0.0.1:{run.webhook_port}"
    assert f"webhook  {webhook_url}" in out
    assert f"backend  http://127.0.0.1:{run.env['BACKEND_PORT']}" in out
    assert f"ivr-vault call --card 1234 --pin 4321 --url {webhook_url}" in out

    # .dev/vault.env: both spellings, private, and the bao CLI works from it alone.
    env_vars = vault_env(run)
    assert set(env_vars) == {"VAULT_ADDR", "VAULT_TOKEN", "BAO_ADDR", "BAO_TOKEN"}
    assert env_vars["VAULT_ADDR"] == env_vars["BAO_ADDR"]
    assert env_vars["VAULT_TOKEN"] == env_vars["BAO_TOKEN"]
    assert (run.state / "vault.env").stat().st_mode & 0o777 == 0o600
    assert (run.state / "vault-audit.log").exists()
    bao = str(Path(sys.executable).with_name("bao"))
    rotated = subprocess.run(
        ["bash", "-c", 'source .dev/vault.env && "$BAO_BIN" write -f '
                       "transit/keys/ivr-dtmf/rotate"],
        cwd=run.cwd, env=base_env(run.cwd, BAO_BIN=bao), capture_output=True, text=True,
        timeout=30, check=False)
    assert rotated.returncode == 0, rotated.stderr
    admin = VaultClient(env_vars["VAULT_ADDR"], Secret(env_vars["VAULT_TOKEN"]), timeout=5)
    assert admin.read("transit/keys/ivr-dtmf", "read key")["data"]["latest_version"] == 2

    # No secret on any command line: not the root token (by env to bao), nor the others.
    secrets = [env_vars["VAULT_TOKEN"], (run.state / "twilio-auth-token").read_text().strip(),
               (run.state / "backend-token").read_text().strip()]
    children = descendants(run.process.pid)
    assert any(Path(argv[0]).name == "bao" for argv in children.values())
    assert sum("serve" in argv for argv in children.values()) == 2
    for argv in children.values():
        assert not any(secret in arg for secret in secrets for arg in argv)

    # TWILIO_AUTH_TOKEN unset: a dev token was generated, and `call` finds it.
    assert (run.state / "twilio-auth-token").stat().st_mode & 0o777 == 0o600
    ok = call(run, "4321")
    assert ok.returncode == 0, ok.stderr + ok.stdout
    assert ok.stdout.splitlines()[-1] == FOUND
    wrong = call(run, "0000")
    assert wrong.stdout.splitlines()[-1] == \
        "We were not able to locate you in our system. Goodbye."
    assert "NDMyMQ==" not in (run.state / "vault-audit.log").read_text()  # base64 "4321"

    # A second `dev` in the same directory fails at once, and says why.
    started = time.monotonic()
    second = subprocess.run([sys.executable, "-m", "service", "dev"], cwd=run.cwd,
                            env=run.env, capture_output=True, text=True, timeout=30,
                            check=False)
    assert time.monotonic() - started < 10
    assert second.returncode == 2
    assert "already running in this directory" in second.stderr
    assert str(run.process.pid) in second.stderr
    assert run.process.poll() is None

    # Ctrl-C: SIGINT to the whole foreground process group, as a terminal sends it.
    os.killpg(run.process.pid, signal.SIGINT)
    assert run.process.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [argv for pid, argv in children.items() if alive(pid)]
    assert "ivr-vault: stopping." in run.output()


def test_dev_on_an_existing_vault_honours_twilio_auth_token(start_dev: Callable[..., DevRun],
                                                            dev_vault: DevVault) -> None:
    """VAULT_ADDR + VAULT_TOKEN: no Vault of its own; TWILIO_AUTH_TOKEN from the environment
    signs the calls. SIGINT to the launcher alone, even one started with SIGINT ignored,
    still stops both services, and leaves the Vault it did not start running."""
    token = "test-twilio-token-from-env"
    run = start_dev(sigint_ignored=True, TWILIO_AUTH_TOKEN=token, **dev_vault.env())
    run.wait_for(READY_LINE)
    assert f"Using the Vault at {dev_vault.addr}" in run.output()
    assert not (run.state / "vault.env").exists()
    children = descendants(run.process.pid)
    assert not any(Path(argv[0]).name == "bao" for argv in children.values())

    assert (run.state / "twilio-auth-token").read_text().strip() == token
    ok = call(run, "4321", TWILIO_AUTH_TOKEN=token)
    assert ok.stdout.splitlines()[-1] == FOUND
    refused = call(run, "4321", TWILIO_AUTH_TOKEN="some-other-token")
    assert refused.returncode == 1
    assert "[webhook answered HTTP 403]" in refused.stdout

    run.process.send_signal(signal.SIGINT)
    assert run.process.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [argv for pid, argv in children.items() if alive(pid)]
    assert VaultClient(dev_vault.addr, dev_vault.root_token, timeout=5).health()["sealed"] \
        is False


def test_a_killed_launcher_leaves_no_orphans(start_dev: Callable[..., DevRun]) -> None:
    """SIGKILL cannot be caught: the children die with their parent (PR_SET_PDEATHSIG)."""
    run = start_dev()
    run.wait_for(READY_LINE)
    children = descendants(run.process.pid)
    assert len(children) >= 3  # bao, backend, webhook
    run.process.kill()
    run.process.wait(timeout=10)
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [argv for pid, argv in children.items() if alive(pid)]
