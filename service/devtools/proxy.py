"""``make run-ha``'s proxy: Caddy (proxy/Caddyfile.ha) on loopback, plain HTTP, balancing
the webhooks with active health checks on their /readyz."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from service.devtools.devstack import _die_with_parent, stop_process, wait_http
from service.devtools.tools import HOW, find_tool
from service.errors import ConfigError, ServiceNotReady
from service.vault.bootstrap import layout_dir

READY_TIMEOUT_S = 20.0


def find_caddy() -> str:
    found = find_tool("caddy")
    if found is None:
        raise ConfigError(f"caddy not found: {HOW['caddy']}")
    return found


@dataclass
class DevProxy:
    port: int
    upstreams: tuple[str, ...]  # host:port of each webhook
    home: Path
    process: subprocess.Popen[bytes] | None = field(default=None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "caddy.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @classmethod
    def start(cls, home: Path, *, port: int, upstreams: Sequence[str]) -> DevProxy:
        proxy = cls(port, tuple(upstreams), home)
        proxy.launch()
        return proxy

    def launch(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "XDG_DATA_HOME": str(self.home / "data"),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "SITE_ADDRESS": self.url,
            "CADDY_ADMIN": "off",
            "WEBHOOK_UPSTREAMS": "to " + " ".join(self.upstreams),
        }
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            self.process = subprocess.Popen(
                [
                    find_caddy(),
                    "run",
                    "--config",
                    str(layout_dir() / "proxy" / "Caddyfile.ha"),
                    "--adapter",
                    "caddyfile",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only a prctl call
            )
        try:
            # Not proxied: Caddy itself answers 404, so it is up.
            wait_http(
                f"{self.url}/healthz",
                timeout=READY_TIMEOUT_S,
                process=self.process,
                ok=(404,),
                log=self.log_path,
            )
        except ServiceNotReady as exc:
            self.stop()
            raise ServiceNotReady(f"caddy: {exc}") from None

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
