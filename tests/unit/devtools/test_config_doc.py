"""docs/configuration.md is generated from the settings' declarations, and is up to date."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from service.devtools import config_doc
from service.settings import Settings, env_name, spec


def test_docs_configuration_is_the_generated_text() -> None:
    written = config_doc.PATH.read_text(encoding="utf-8")
    assert written == config_doc.render(), (
        "docs/configuration.md is stale: run "
        ".venv/bin/python -m service.devtools.config_doc --write")


def test_every_setting_has_a_row_with_its_default_bounds_and_file_variant() -> None:
    rows = {line.split(" | ")[0].removeprefix("| "): line
            for line in config_doc.render_table().splitlines()[2:]}
    assert len(rows) == len(dataclasses.fields(Settings))
    for field in dataclasses.fields(Settings):
        name, declared = env_name(field), spec(field)
        key = f"`{name}`" + (f" or `{name}_FILE`" if declared.secret else "")
        assert key in rows, name
        assert declared.parse.accepts in rows[key]
    assert "| `WEBHOOK_PORT` | `8080` | whole number, 0 to 65535 |" in rows["`WEBHOOK_PORT`"]
    assert "Required by: webhook, backend." in rows["`BACKEND_TOKEN` or `BACKEND_TOKEN_FILE`"]


def test_write_then_print(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "docs" / "configuration.md"
    monkeypatch.setattr(config_doc, "PATH", target)
    assert config_doc.main(["--write"]) == 0
    assert target.read_text(encoding="utf-8") == config_doc.render()
    capsys.readouterr()
    assert config_doc.main([]) == 0
    assert capsys.readouterr().out == config_doc.render()
    assert config_doc.main(["--bogus"]) == 2
