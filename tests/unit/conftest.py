"""Unit tests run in this process only: no Vault, no subprocess, no server socket. A unit
test that tries fails at once with where it belongs (tests/integration/)."""

from __future__ import annotations

import os
import socket
import subprocess
from typing import NoReturn

import pytest


@pytest.fixture(autouse=True)
def no_processes_or_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> NoReturn:
        raise AssertionError(
            "a unit test starts no process and serves no socket: "
            "this test belongs in tests/integration/"
        )

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    monkeypatch.setattr(socket.socket, "listen", refuse)
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)
