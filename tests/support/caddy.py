"""The real Caddy (proxy/Caddyfile) in front of a real stack, for the tests that go through
the proxy (tests/integration/deploy/test_proxy.py, test_slow_clients.py)."""

from __future__ import annotations

import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.devtools.devstack import DevVault, free_port, stop_process
from service.vault.bootstrap import RoleCredentials, layout_dir
from tests.support.stack import Stack, make_stack
from tests.support.tools import require


@dataclass
class Caddy:
    process: subprocess.Popen[bytes]
    port: int
    home: Path

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def root_ca(self) -> Path:
        return self.home / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    def client(self, **kwargs: object) -> httpx.Client:
        # Real TLS verification against Caddy's own CA: no verify=False anywhere.
        context = ssl.create_default_context(cafile=str(self.root_ca))
        return httpx.Client(verify=context, timeout=10, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def start(
        cls, home: Path, upstream: str, port: int | None = None, env: dict[str, str] | None = None
    ) -> Caddy:
        port = port or free_port()
        home.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "SITE_ADDRESS": f"localhost:{port}, 127.0.0.1:{port}",
            "WEBHOOK_UPSTREAM": upstream,
            "CADDY_ADMIN": "off",
            **(env or {}),
        }
        with (home / "caddy.log").open("ab") as log:
            process = subprocess.Popen(
                [
                    require("caddy"),
                    "run",
                    "--config",
                    str(layout_dir() / "proxy" / "Caddyfile"),
                    "--adapter",
                    "caddyfile",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        caddy = cls(process, port, home)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert process.poll() is None, (home / "caddy.log").read_text()[-2000:]
            if caddy.root_ca.exists():
                try:
                    with caddy.client() as client:
                        if client.get(f"{caddy.url}/healthz").status_code == 404:
                            return caddy
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        caddy.stop()
        raise TimeoutError("caddy did not start")

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class Proxied:
    stack: Stack
    caddy: Caddy


def proxied_stack(
    dev_vault: DevVault,
    credentials: dict[str, RoleCredentials],
    directory: Path,
    webhook_env: dict[str, str],
    caddy_port: int,
    caddy_env: dict[str, str] | None = None,
) -> Iterator[Proxied]:
    stack = make_stack(dev_vault, credentials, directory, webhook_env=webhook_env)
    try:
        caddy = Caddy.start(
            directory / "caddy", f"127.0.0.1:{stack.webhook.port}", port=caddy_port, env=caddy_env
        )
        try:
            yield Proxied(stack, caddy)
        finally:
            caddy.stop()
    finally:
        stack.stop()
