"""Configuration: secrets from ``*_FILE``, and start-up that fails with one line naming the
bad setting and never echoing a secret. (The documented table is checked by
tests/unit/devtools/test_config_doc.py.)"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.errors import ConfigError
from service.settings import Secret, Settings, StoreUrl, env_name, spec

SECRETS = [env_name(field) for field in dataclasses.fields(Settings) if spec(field).secret]


def test_every_default_in_the_table_is_a_valid_value() -> None:
    settings = Settings.from_environ({})
    assert settings.vault_addr == ("http://127.0.0.1:8200",)
    assert (settings.lockout_duration, settings.step_max_age) == (900, 300)


# The form each secret's text takes: any text, but for a URL that carries one.
SECRET_FORMS = {"STORE_URL": "postgresql://ivr:{}@db.internal/ivr"}


@pytest.mark.parametrize("name", SECRETS)
def test_every_secret_also_comes_from_a_file(name: str, tmp_path: Path) -> None:
    value = f"{name.lower()}-from-file-0123"
    text = SECRET_FORMS.get(name, "{}").format(value)
    path = tmp_path / "secret"
    path.write_text(text + "\n")
    # The file wins over a value in the environment: a leftover env var must not shadow it.
    env = {f"{name}_FILE": str(path), name: "from-env"}
    settings = Settings.from_environ(env)
    secret = getattr(settings, name.lower())
    if isinstance(secret, StoreUrl):
        secret = secret.conninfo
    assert isinstance(secret, Secret) and secret.reveal() == text
    assert value not in repr(settings)


def test_an_empty_or_missing_secret_file_names_the_file_setting(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"^BACKEND_TOKEN_FILE: the file is empty$"):
        Settings.from_environ({"BACKEND_TOKEN_FILE": str(tmp_path / "empty")})
    with pytest.raises(ConfigError, match=r"^VAULT_SECRET_ID_FILE: cannot read the file"):
        Settings.from_environ({"VAULT_SECRET_ID_FILE": str(tmp_path / "absent")})


# Values that must never appear in any output, whatever goes wrong.
ROLE_ID, SECRET_ID = "role-id-4f1c9a77", "secret-id-9b2e6d13"
TWILIO, BACKEND = "twilio-token-5a8c0e42", "backend-token-7d3f1b96"


def _good_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "secret_id").write_text(SECRET_ID)
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "VAULT_ROLE_ID": ROLE_ID,
        "VAULT_SECRET_ID_FILE": str(tmp_path / "secret_id"),
        "TWILIO_AUTH_TOKEN": TWILIO,
        "BACKEND_TOKEN": BACKEND,
        "STORE_PATH": str(tmp_path / "store.sqlite3"),
    }


# role, settings changed (None: removed), the setting named, what must not be shown
CASES: list[tuple[str, dict[str, str | None], str, tuple[str, ...]]] = [
    ("webhook", {"TWILIO_AUTH_TOKEN": None}, "TWILIO_AUTH_TOKEN", ()),
    ("backend", {"VAULT_SECRET_ID_FILE": None}, "VAULT_SECRET_ID", ()),
    ("webhook", {"WEBHOOK_PORT": "80a"}, "WEBHOOK_PORT", ()),
    ("backend", {"LOCKOUT_DURATION": "soon"}, "LOCKOUT_DURATION", ()),
    ("webhook", {"STEP_MAX_AGE": "5h"}, "STEP_MAX_AGE", ()),
    ("webhook", {"LOG_FORMAT": "xml"}, "LOG_FORMAT", ()),
    (
        "webhook",
        {"VAULT_ADDR": "https://ops:pa55-in-url-31@vault.internal"},
        "VAULT_ADDR",
        ("pa55-in-url-31",),
    ),
    (
        "webhook",
        {"PUBLIC_BASE_URL": "https://ivr.example.com/?sig=q8-hidden-22"},
        "PUBLIC_BASE_URL",
        ("q8-hidden-22",),
    ),
    ("backend", {"BACKEND_TOKEN_FILE": "/nonexistent/backend-token"}, "BACKEND_TOKEN_FILE", ()),
]


def test_a_bad_setting_stops_start_up_with_one_line_naming_it(tmp_path: Path) -> None:
    running = []
    for role, change, _named, _hidden in CASES:
        env = _good_env(tmp_path)
        for key, value in change.items():
            if value is None:
                env.pop(key)
            else:
                env[key] = value
        running.append(
            subprocess.Popen(
                [sys.executable, "-m", "service", "serve", role],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for process, (role, _change, named, hidden) in zip(running, CASES, strict=True):
            stdout, stderr = process.communicate(timeout=60)
            context = f"{role} {named}: {stderr!r}"
            assert process.returncode == 2, context
            assert stdout == "", context
            lines = stderr.splitlines()
            assert len(lines) == 1, context
            assert lines[0].startswith(f"ivr-vault: configuration error: {named}"), context
            for secret in (ROLE_ID, SECRET_ID, TWILIO, BACKEND, *hidden):
                assert secret not in stderr, context
    finally:
        # A case that wrongly starts serving must not outlive the test.
        for process in running:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert not (tmp_path / "store.sqlite3").exists()  # stopped before touching anything


def test_the_same_environment_with_nothing_wrong_passes_the_check(tmp_path: Path) -> None:
    for role in ("webhook", "backend"):
        result = subprocess.run(
            [sys.executable, "-m", "service", "serve", role, "--check"],
            env=_good_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"ivr-vault: {role} configuration is valid"


def test_a_retired_setting_is_named_once_and_start_up_goes_on(tmp_path: Path) -> None:
    """LOCKOUT_WINDOW does nothing any more: one warning naming it (never its value)."""
    env = {**_good_env(tmp_path), "LOCKOUT_WINDOW": "77m", "LOG_FORMAT": "json"}
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve", "backend", "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ivr-vault: backend configuration is valid")
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if "LOCKOUT_WINDOW" in line]
    assert len(warnings) == 1 and "retired setting" in warnings[0], output
    # Its value is nowhere in the line; the timestamp is left out of that search, since its
    # microseconds may hold "77" (seen once: ...24.384877Z).
    line = {k: v for k, v in json.loads(warnings[0]).items() if k != "timestamp"}
    assert "ignored" in line["detail"] and "77" not in json.dumps(line)
