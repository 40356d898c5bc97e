"""doctor's settings row names the setting that chose the store (service/doctor/run.py)."""

from __future__ import annotations

from pathlib import Path

from service.doctor.run import settings_check
from service.settings import Settings


def test_the_settings_row_names_store_url_without_its_password(tmp_path: Path) -> None:
    url = tmp_path / "store-url"  # with a password, the URL comes from a file only
    url.write_text("postgresql://ivr:s3cret@db.example:5432/ivr")
    settings = Settings.from_environ(
        {"STORE_URL_FILE": str(url), "STORE_PATH": "/tmp/ignored.sqlite3"}
    )
    row = settings_check(settings, None)
    assert row.ok
    assert "STORE_URL postgresql://ivr@db.example:5432/ivr" in row.detail, row.detail
    assert "s3cret" not in row.detail and "STORE_PATH" not in row.detail


def test_without_store_url_it_is_store_path() -> None:
    row = settings_check(Settings.from_environ({"STORE_PATH": "/tmp/a.sqlite3"}), None)
    assert row.ok and "STORE_PATH /tmp/a.sqlite3" in row.detail and "STORE_URL" not in row.detail
