"""A compose file without a Docker engine: each service's own command runs as a
local process with that service's environment (interpolated as compose would), its
volumes and secrets mapped to temp directories shared the way compose shares them, and only
host names, addresses and ports rewritten. The OpenBao image's ``server`` command is what
its entrypoint makes of it: ``bao server -config=/openbao/config`` (run here with the
``bao`` the tests use, the same 2.7.2 the files pin), under vault/audit-rotate.sh as
compose runs it. The official PostgreSQL image is a real PostgreSQL started by
LocalPostgres, with the role and password its environment names.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from service.devtools.caller import Caller
from service.devtools.devstack import ServiceProcess, find_vault_binary, stop_process
from service.devtools.postgres import DATABASE as PG_DATABASE
from service.devtools.postgres import OWNER, RUNTIME, LocalPostgres
from service.devtools.postgres import USER as PG_USER
from tests.support.compose import Compose
from tests.support.repo import ROOT

BIN = Path(sys.executable).parent  # ivr-vault and python of the venv running the tests
OPENBAO_CONFIG_DIR = "/openbao/config"  # where the image's entrypoint points -config


@dataclass
class LocalCompose:
    """Where compose's volumes, secrets, addresses and ports land in this local, and the
    long-running services started so far."""

    compose: Compose
    tmp: Path
    ports: Mapping[str, Mapping[int, int]]  # service → container port → local port
    secrets: Mapping[str, str]
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    postgres: dict[str, LocalPostgres] = field(default_factory=dict)

    def port(self, service: str) -> int:
        return next(iter(self.ports[service].values()))

    def volume(self, name: str) -> Path:
        path = self.tmp / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def mounts(self, name: str) -> list[tuple[str, Path]]:
        spec = self.compose["services"][name]
        pairs = []
        for volume in spec.get("volumes", []):
            source, target = volume.split(":")[:2]
            pairs.append((target, ROOT / source if source.startswith(".") else self.volume(source)))
        for secret in spec.get("secrets", []):
            path = self.tmp / "secrets" / secret
            path.parent.mkdir(exist_ok=True)
            path.write_text(self.secrets[self.compose["secrets"][secret]["environment"]])
            pairs.append((f"/run/secrets/{secret}", path))
        return sorted(pairs, key=lambda pair: -len(pair[0]))

    def localize(self, text: str, name: str) -> str:
        for target, host in self.mounts(name):
            text = re.sub(rf"(?<![\w/]){re.escape(target)}(?=/|\b|$)", str(host), text)

        def other(match: re.Match[str]) -> str:
            return f"127.0.0.1:{self.ports[match[1]][int(match[2])]}"

        services = "|".join(re.escape(s) for s in self.ports)
        text = re.sub(rf"\b({services}):(\d+)\b", other, text)
        if name in self.ports:  # this container's own listen addresses
            own = self.ports[name]
            text = re.sub(
                r"\b(?:0\.0\.0\.0|127\.0\.0\.1):(\d+)\b",
                lambda m: f"127.0.0.1:{own.get(int(m[1]), int(m[1]))}",
                text,
            )
        return text.replace("0.0.0.0", "127.0.0.1")

    def environment(self, name: str, **extra: str) -> dict[str, str]:
        env = {
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.tmp),
            "PYTHONUNBUFFERED": "1",
        }
        env.update(
            {
                k: self.localize(str(v), name)
                for k, v in self.compose["services"][name].get("environment", {}).items()
            }
        )
        for key in ("WEBHOOK_PORT", "BACKEND_PORT"):
            if key in env:  # its own port: backend-2 is a backend too
                env[key] = str(self.port(name if name in self.ports else key.split("_")[0].lower()))
        return {**env, **extra}

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    # -- running services -------------------------------------------------------------------

    def _argv(self, name: str) -> list[str]:
        spec = self.compose["services"][name]
        command = [self.localize(part, name) for part in spec["command"]]
        if spec.get("entrypoint") == ["/bin/sh", "-ec"]:
            return ["/bin/sh", "-ec", *command]
        if spec["image"].startswith("openbao/"):
            # [/bin/sh, the rotation script, docker-entrypoint.sh, server]: the script runs
            # as it is, the entrypoint's `server` as what it makes of it.
            wrapper, command = command[:-2], command[-2:]
            assert command == ["docker-entrypoint.sh", "server"], command
            config = self.tmp / f"{name}-config"
            shutil.rmtree(config, ignore_errors=True)
            config.mkdir()
            for target, host in self.mounts(name):
                if target.startswith(OPENBAO_CONFIG_DIR + "/"):
                    (config / Path(target).name).write_text(self.node_paths(host.read_text(), name))
            return [*wrapper, find_vault_binary(), "server", f"-config={config}"]
        return [str(BIN / "ivr-vault"), *command]

    def cwd(self, name: str) -> Path:
        """Where a service runs: an OpenBao node in its own directory (node_paths)."""
        if not self.compose["services"][name].get("image", "").startswith("openbao/"):
            return self.tmp
        here = self.tmp / f"{name}-cwd"
        here.mkdir(exist_ok=True)
        return here

    def node_paths(self, config: str, name: str) -> str:
        """An OpenBao node's configuration, its volumes as paths relative to its own
        directory (cwd), where each is a link to the volume. In containers every node of a
        cluster reads the same text (/openbao/logs/audit.log), and OpenBao keeps the audit
        device's options in the cluster's data: a node whose options differ refuses to
        serve. Relative paths keep the text equal on every node, as the containers do."""
        for target, host in self.mounts(name):
            if target.startswith(OPENBAO_CONFIG_DIR):
                continue
            link = self.cwd(name) / target.strip("/").replace("/", "_")
            if not link.is_symlink():
                link.symlink_to(host)
            config = re.sub(rf"(?<![\w/]){re.escape(target)}(?=/|\b|$)", link.name, config)
        return self.localize(config, name)

    def run(self, name: str, **extra: str) -> subprocess.CompletedProcess[str]:
        """A one-shot service (``vault-tls``, ``vault-init``), as `up` or `run` runs it."""
        return subprocess.run(
            self._argv(name),
            env=self.environment(name, **extra),
            cwd=self.cwd(name),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def start(self, name: str) -> None:
        """A long-running service, in the background; its output in ``log(name)``."""
        spec = self.compose["services"][name]
        command = spec.get("command", [])
        if command[:1] == ["serve"]:  # backend, backend-2, webhook: `serve ROLE`
            process = ServiceProcess(
                command[1],
                self.port(name),
                self.environment(name),
                self.tmp,
                extra_args=tuple(command[2:]),
                name=name,
            )
            self.services[name] = process.start()
            return
        if spec.get("image", "").startswith("postgres:"):
            self._start_postgres(name)
            return
        with self.log(name).open("ab") as log:
            self.running[name] = subprocess.Popen(
                self._argv(name),
                env=self.environment(name),
                cwd=self.cwd(name),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _start_postgres(self, name: str) -> None:
        """The official image's server, as its entrypoint makes it: POSTGRES_USER owning
        POSTGRES_DB, with the password in POSTGRES_PASSWORD_FILE, on the service's port.
        Here a real PostgreSQL from LocalPostgres (a temporary cluster the postgres user
        can reach), its role given that password."""
        env = self.environment(name)
        assert (env["POSTGRES_USER"], env["POSTGRES_DB"]) == (PG_USER, PG_DATABASE)
        password = Path(env["POSTGRES_PASSWORD_FILE"]).read_text(encoding="utf-8").strip()
        server = LocalPostgres(port=self.port(name))
        server.start()
        self.postgres[name] = server
        # postgres/roles.sh's roles (LocalPostgres makes them too), with db-secret's
        # passwords, as that script gives them.
        secrets = Path(env["POSTGRES_PASSWORD_FILE"]).parent
        with psycopg.connect(server.url_for("postgres"), autocommit=True) as db:
            for role, given in (
                (PG_USER, password),
                (OWNER, _read(secrets / "owner-password")),
                (RUNTIME, _read(secrets / "backend-password")),
            ):
                db.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(given)
                    )
                )

    def stop(self, name: str) -> None:
        if name in self.services:
            self.services.pop(name).stop()
        elif name in self.running:
            stop_process(self.running.pop(name))
        elif name in self.postgres:
            self.postgres.pop(name).stop()

    def down(self) -> None:
        """Everything still running, the last started first."""
        for name in reversed([*self.running, *self.postgres, *self.services]):
            with contextlib.suppress(Exception):
                self.stop(name)

    def healthy(self, name: str) -> bool:
        """The service's compose health check, run as the container would run it."""
        test = self.compose["services"][name]["healthcheck"]["test"]
        argv = (
            ["/bin/sh", "-c", self.localize(test[1], name)]
            if test[0] == "CMD-SHELL"
            else [self.localize(part, name) for part in test[1:]]
        )
        if argv[0] == "bao":
            argv[0] = find_vault_binary()
        if argv[0] == "pg_isready":  # the container's default port is its own here
            argv += ["-p", str(self.port(name))]
        env = self.services[name].env if name in self.services else self.environment(name)
        return (
            subprocess.run(
                argv, env=dict(env), capture_output=True, timeout=30, check=False
            ).returncode
            == 0
        )

    def call(self, card: str = "1234", pin: str = "4321") -> list[str]:
        """A signed call, as Twilio places it through the proxy: signed for the public URL
        (PUBLIC_BASE_URL), sent to the local webhook (the proxy's job)."""
        public = self.compose["services"]["webhook"]["environment"]["PUBLIC_BASE_URL"]
        actual = f"http://127.0.0.1:{self.port('webhook')}"

        def redirect(request: httpx.Request) -> None:
            url = str(request.url)
            if url.startswith(public):
                request.url = httpx.URL(actual + url[len(public) :])
                request.headers["host"] = request.url.netloc.decode()

        heard: list[str] = []
        with httpx.Client(timeout=20, event_hooks={"request": [redirect]}) as client:
            Caller(public, self.secrets["TWILIO_AUTH_TOKEN"], client, say=heard.append).play(
                [card, pin]
            )
        return heard


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()
