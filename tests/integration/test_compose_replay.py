"""docker-compose.yml *replayed* without a Docker engine: each service's own command runs as
a local process with that service's environment (interpolated as compose would), its volumes
and secrets mapped to temp directories shared the way compose shares them, and only host
names and ports rewritten. The vault service's script starts a real OpenBao, vault-init
bootstraps it, backend and webhook come up from the credentials vault-init left in their
volumes, and a signed call hears the demo account. (The file's structure and schema:
tests/unit/deploy/test_compose.py.)
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.devtools.caller import Caller
from service.devtools.devstack import (
    ServiceProcess,
    find_vault_binary,
    free_port,
    stop_process,
    wait_http,
)
from tests.support.compose import Compose, load
from tests.support.repo import ROOT

BIN = Path(sys.executable).parent  # ivr-vault and python of the venv running the tests


@dataclass
class Host:
    """Where compose's volumes, secrets and host names land in this replay."""

    tmp: Path
    ports: dict[str, int]
    secrets: Mapping[str, str]

    def mounts(self, compose: Compose, name: str) -> list[tuple[str, Path]]:
        pairs = []
        for volume in compose["services"][name].get("volumes", []):
            source, target = volume.split(":")[:2]
            host = (ROOT / source) if source.startswith(".") else self.tmp / "volumes" / source
            if not source.startswith("."):
                host.mkdir(parents=True, exist_ok=True)
            pairs.append((target, host))
        for secret in compose["services"][name].get("secrets", []):
            path = self.tmp / "secrets" / secret
            path.parent.mkdir(exist_ok=True)
            path.write_text(self.secrets[compose["secrets"][secret]["environment"]])
            pairs.append((f"/run/secrets/{secret}", path))
        return sorted(pairs, key=lambda pair: -len(pair[0]))

    def localize(self, text: str, mounts: list[tuple[str, Path]], own: str) -> str:
        for target, host in mounts:
            text = re.sub(rf"(?<![\w/]){re.escape(target)}(?=/|\b|$)", str(host), text)
        for service, port in self.ports.items():
            text = re.sub(rf"\b{service}:\d+", f"127.0.0.1:{port}", text)
        if own in self.ports:  # a listen address inside the container
            text = re.sub(r"0\.0\.0\.0:\d+", f"127.0.0.1:{self.ports[own]}", text)
        return text.replace("0.0.0.0", "127.0.0.1")

    def environment(self, compose: Compose, name: str) -> dict[str, str]:
        mounts = self.mounts(compose, name)
        env = {"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               "HOME": str(self.tmp), "PYTHONUNBUFFERED": "1"}
        env.update({k: self.localize(str(v), mounts, name)
                    for k, v in compose["services"][name].get("environment", {}).items()})
        for key in ("WEBHOOK_PORT", "BACKEND_PORT"):
            if key in env:
                env[key] = str(self.ports[key.split("_")[0].lower()])
        return env


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Compose, Host]]:
    tmp = tmp_path_factory.mktemp("compose")
    twilio = "twilio-" + os.urandom(8).hex()
    compose = load({"TWILIO_AUTH_TOKEN": twilio})
    yield compose, Host(tmp, {"vault": free_port(), "backend": free_port(),
                              "webhook": free_port()}, {"TWILIO_AUTH_TOKEN": twilio})


def _script(compose: Compose, host: Host, name: str) -> str:
    service = compose["services"][name]
    assert service["entrypoint"] == ["/bin/sh", "-ec"]
    return host.localize(service["command"][0], host.mounts(compose, name), name)


def test_replay_vault_init_backend_webhook_and_a_call(replay: tuple[Compose, Host]) -> None:
    compose, host = replay
    # vault: its own script, with the image's `bao` being the one the tests use.
    script = _script(compose, host, "vault").replace("exec bao ", f"exec {find_vault_binary()} ")
    # Its config (a bind-mounted file) names the audit log by its container path too.
    config = ROOT / "vault" / "compose-server.hcl"
    assert str(config) in script
    local_config = host.tmp / "compose-server.hcl"
    local_config.write_text(host.localize(config.read_text(), host.mounts(compose, "vault"),
                                          "vault"))
    script = script.replace(str(config), str(local_config))
    if os.geteuid() != 0:
        script = script.replace("chown ", ": chown ")
    log = (host.tmp / "vault.log").open("ab")
    vault = subprocess.Popen(["/bin/sh", "-ec", script], env={"PATH": "/usr/bin:/bin",
                             "HOME": str(host.tmp)}, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    services: list[ServiceProcess] = []
    try:
        wait_http(f"http://127.0.0.1:{host.ports['vault']}/v1/sys/health", timeout=30,
                  process=vault)
        root_file = host.tmp / "volumes" / "vault-root" / "token"
        root_token = root_file.read_text().strip()
        assert len(root_token) == 64

        init = subprocess.run(["/bin/sh", "-ec", _script(compose, host, "vault-init")],
                              env=host.environment(compose, "vault-init"), cwd=host.tmp,
                              capture_output=True, text=True, timeout=120)
        assert init.returncode == 0, init.stderr
        assert "demo account AC12345678 provisioned" in init.stdout
        volumes = host.tmp / "volumes"
        for role in ("webhook", "backend"):
            files = sorted(p.name for p in (volumes / f"{role}-creds").iterdir())
            assert files == ["backend_token", "role_id", "secret_id"], role
            for path in (volumes / f"{role}-creds").iterdir():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
                assert root_token not in path.read_text()
        assert ((volumes / "webhook-creds" / "role_id").read_text()
                != (volumes / "backend-creds" / "role_id").read_text())
        assert root_token not in init.stdout + init.stderr

        # The audit device of compose-server.hcl is live: the bootstrap is on record.
        audit = (volumes / "vault-logs" / "audit.log").read_text()
        assert "transit/keys/ivr-dtmf" in audit

        for name in ("backend", "webhook"):
            command = compose["services"][name]["command"]
            process = ServiceProcess(name, host.ports[name], host.environment(compose, name),
                                     host.tmp, extra_args=tuple(command[2:]))
            services.append(process.start())
        webhook_url = f"http://127.0.0.1:{host.ports['webhook']}"
        for process in services:
            # Each compose health check, run as the container would run it.
            probe = subprocess.run(compose["services"][process.role]["healthcheck"]["test"][1:],
                                   env=process.env, capture_output=True, timeout=30)
            assert probe.returncode == 0, process.role
        wait_http(f"{webhook_url}/readyz", timeout=15)

        heard: list[str] = []
        with httpx.Client(timeout=20) as client:
            # The webhook checks signatures against PUBLIC_BASE_URL (https://localhost, the
            # proxy); the caller signs for that URL and talks to the webhook directly.
            public = compose["services"]["webhook"]["environment"]["PUBLIC_BASE_URL"]
            caller = Caller(public, host.secrets["TWILIO_AUTH_TOKEN"], client, say=heard.append)
            client.event_hooks["request"] = [lambda r: _redirect(r, public, webhook_url)]
            assert caller.play(["1234", "4321"]).completed
        assert heard[-1] == ("Thank you. Your account number is AC12345678 and your balance "
                             "is 12.55")
    finally:
        for process in reversed(services):
            process.stop()
        os.killpg(vault.pid, signal.SIGTERM)
        stop_process(vault)  # type: ignore[arg-type]
        log.close()


def _redirect(request: httpx.Request, public: str, actual: str) -> None:
    """Send what was signed for the public URL to the local webhook (the proxy's job)."""
    url = str(request.url)
    if url.startswith(public):
        request.url = httpx.URL(actual + url[len(public):])
        request.headers["host"] = request.url.netloc.decode()


def test_probe_fails_when_no_service_answers(tmp_path: Path) -> None:
    dead = str(free_port())
    result = subprocess.run(["python", "-m", "service.web.probe", "--ready"],
                            env={"PATH": f"{BIN}:/usr/bin:/bin",
                                 "WEBHOOK_PORT": dead, "BACKEND_PORT": dead},
                            cwd=ROOT, capture_output=True, timeout=30)
    assert result.returncode == 1
