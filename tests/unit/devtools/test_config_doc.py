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
        ".venv/bin/python -m service.devtools.config_doc --write"
    )


def test_every_setting_has_a_row_with_its_default_bounds_and_file_variant() -> None:
    rows = {
        line.split(" | ")[0].removeprefix("| "): line
        for line in config_doc.render_table().splitlines()[2:]
    }
    assert len(rows) == len(dataclasses.fields(Settings))
    for field in dataclasses.fields(Settings):
        name, declared = env_name(field), spec(field)
        key = f"`{name}`" + (f" or `{name}_FILE`" if declared.secret else "")
        assert key in rows, name
        assert declared.parse.accepts in rows[key]
    assert "| `WEBHOOK_PORT` | `8080` | whole number, 0 to 65535 |" in rows["`WEBHOOK_PORT`"]
    assert "Required by: webhook, backend." in rows["`BACKEND_TOKEN` or `BACKEND_TOKEN_FILE`"]


def test_write_then_print(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "docs" / "configuration.md"
    monkeypatch.setattr(config_doc, "PATH", target)
    assert config_doc.main(["--write"]) == 0
    assert target.read_text(encoding="utf-8") == config_doc.render()
    capsys.readouterr()
    assert config_doc.main([]) == 0
    assert capsys.readouterr().out == config_doc.render()
    assert config_doc.main(["--bogus"]) == 2


def test_every_compose_only_variable_is_explained() -> None:
    """A variable a compose file reads is a setting (the table above) or explained in the
    compose-only table; nothing in that table is gone from the files."""
    settings = {env_name(field) for field in dataclasses.fields(Settings)}
    found = config_doc.compose_variables()
    assert {"SITE_ADDRESS", "CADDY_TLS", "IVR_INTERNAL_SUBNET", "AUDIT_KEEP"} <= found.keys()
    assert found.keys() - settings == config_doc.COMPOSE_ONLY.keys()
    assert found["AUDIT_KEEP"] == ("10", ["vault/audit-rotate.sh"])
    table = config_doc.render_compose_only()
    assert "| `CADDY_TLS` | `internal` | `docker-compose.yml` |" in table


def test_make_docs_regenerates_the_file() -> None:
    makefile = (config_doc.ROOT / "Makefile").read_text(encoding="utf-8")
    assert "\ndocs: $(STAMP)\n\t$(BIN)/python -m service.devtools.config_doc --write\n" in makefile
