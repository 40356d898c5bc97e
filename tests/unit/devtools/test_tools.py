"""Finding the programs beside Python (service/devtools/tools.py): the venv's bin/ before
PATH, so that the tests run the Caddy of the deployed version, not the machine's."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from service.devtools import tools


def test_the_venvs_bin_comes_before_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    venv, system = tmp_path / "venv" / "bin", tmp_path / "usr" / "bin"
    for directory in (venv, system):
        directory.mkdir(parents=True)
    for path in (venv / "python", venv / "caddy", system / "caddy", system / "node"):
        path.touch(mode=0o755)
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    monkeypatch.setenv("PATH", str(system))
    assert tools.find_tool("caddy") == str(venv / "caddy")
    assert tools.find_tool("node") == str(system / "node")  # not in the venv: PATH's
    assert tools.find_tool("promtool") is None
    assert os.access(tools.find_tool("node") or "", os.X_OK)
