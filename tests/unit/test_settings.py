"""Settings.from_environ: defaults, ``*_FILE`` secrets, and errors that name the setting
without ever echoing its value."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from service.errors import ConfigError
from service.settings import (
    Secret,
    Settings,
    StoreUrl,
    env_name,
    parse_duration,
    retired_in,
    spec,
)

MARK = "S3CRET-VALUE-7731"


def test_defaults() -> None:
    s = Settings.from_environ({})
    assert s.vault_addr == ("http://127.0.0.1:8200",)
    assert s.public_base_url == "http://127.0.0.1:8080"
    assert s.backend_url == ("http://127.0.0.1:8081",)
    assert (s.webhook_host, s.webhook_port) == ("127.0.0.1", 8080)
    assert (s.backend_host, s.backend_port) == ("127.0.0.1", 8081)
    assert (s.transit_mount, s.dtmf_key, s.lookup_key) == ("transit", "ivr-dtmf", "ivr-lookup")
    assert s.vault_timeout == 2.0 and s.backend_timeout == 2.0
    assert s.max_attempts == 3
    assert (s.lockout_threshold, s.lockout_duration, s.lockout_hard_limit) == (5, 900, 10)
    assert (s.caller_failure_limit, s.caller_failure_window) == (10, 86_400)
    assert s.step_max_age == 300
    assert s.call_max_age == 4 * 3600
    assert s.trusted_proxies == ()
    assert s.vault_role_id is s.vault_secret_id is s.twilio_auth_token is None
    assert s.log_format == "json" and s.log_level == "INFO"


def test_each_default_is_its_declared_text_parsed() -> None:
    """Settings() and Settings.from_environ({}) are one thing: each field's default is
    the default text of its one declaration, parsed as the environment's would be."""
    assert Settings.from_environ({}) == Settings()
    for field in dataclasses.fields(Settings):
        declared = spec(field)
        assert field.default == declared.parse(declared.default, env_name(field)), field.name
        assert declared.meaning.endswith("."), field.name  # documented (docs/configuration.md)


def test_the_environment_name_is_the_field_name() -> None:
    assert Settings.from_environ({"LOCKOUT_THRESHOLD": "7"}).lockout_threshold == 7
    assert [env_name(f) for f in dataclasses.fields(Settings)][:2] == ["VAULT_ADDR", "VAULT_CACERT"]


def test_values_are_read_and_trimmed() -> None:
    s = Settings.from_environ(
        {
            "VAULT_ADDR": " https://vault.internal:8200/ ",
            "WEBHOOK_PORT": "9090",
            "TRUSTED_PROXIES": "10.0.0.0/8, ::1",
            "LOG_LEVEL": "debug",
            "LOCKOUT_DURATION": "90s",
            "CALL_MAX_AGE": "2h",
            "TRANSIT_MOUNT": "/ivr-transit/",
            "PUBLIC_BASE_URL": "",
        }
    )
    assert s.vault_addr == ("https://vault.internal:8200",)
    assert s.webhook_port == 9090
    assert s.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert s.log_level == "DEBUG"
    assert s.lockout_duration == 90 and s.call_max_age == 7200
    assert s.transit_mount == "ivr-transit"
    assert s.public_base_url == ""


def test_several_addresses_for_a_cluster_and_replicas() -> None:
    s = Settings.from_environ(
        {
            "VAULT_ADDR": "http://127.0.0.1:8200, http://127.0.0.1:8210/,https://v3:8200",
            "BACKEND_URL": "http://backend-1:8081,http://backend-2:8081",
        }
    )
    assert s.vault_addr == ("http://127.0.0.1:8200", "http://127.0.0.1:8210", "https://v3:8200")
    assert s.backend_url == ("http://backend-1:8081", "http://backend-2:8081")


def test_secrets_from_files_win_and_stay_hidden(tmp_path: Path) -> None:
    for name, value in (("role", "role-123"), ("secret", MARK), ("twilio", "tw-456")):
        (tmp_path / name).write_text(f"  {value}\n")
    s = Settings.from_environ(
        {
            "VAULT_ROLE_ID_FILE": str(tmp_path / "role"),
            "VAULT_SECRET_ID_FILE": str(tmp_path / "secret"),
            "TWILIO_AUTH_TOKEN_FILE": str(tmp_path / "twilio"),
            "TWILIO_AUTH_TOKEN": "from-env",
            "BACKEND_TOKEN": "bt-789",
        }
    )
    assert s.vault_role_id == Secret("role-123")
    assert s.vault_secret_id is not None and s.vault_secret_id.reveal() == MARK
    assert s.twilio_auth_token == Secret("tw-456")  # the file wins over the variable
    assert s.backend_token == Secret("bt-789")
    assert MARK not in repr(s) and MARK not in str(s.vault_secret_id)
    assert s.require("webhook") is s


def test_file_variants_exist_only_for_secrets(tmp_path: Path) -> None:
    (tmp_path / "port").write_text("9999")
    assert Settings.from_environ({"WEBHOOK_PORT_FILE": str(tmp_path / "port")}).webhook_port == 8080


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "VAULT_SECRET_ID_FILE: cannot read the file"),
        (b"  \n", "VAULT_SECRET_ID_FILE: the file is empty"),
        (b"\xff\xfe" + MARK.encode(), "VAULT_SECRET_ID_FILE: "),
    ],
)
def test_unusable_secret_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "secret_id"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({"VAULT_SECRET_ID_FILE": str(path)})
    assert str(caught.value).startswith(message)
    assert MARK not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VAULT_ADDR", f"ftp://{MARK}"),
        ("VAULT_ADDR", MARK),
        ("PUBLIC_BASE_URL", f"https://user:{MARK}@example.com"),
        ("PUBLIC_BASE_URL", f"https://example.com/?token={MARK}"),
        ("BACKEND_URL", f"https://example.com/#{MARK}"),
        ("VAULT_TIMEOUT", MARK),
        ("VAULT_TIMEOUT", "0"),
        ("VAULT_TIMEOUT", "nan"),
        ("BACKEND_TIMEOUT", "60"),
        ("WEBHOOK_PORT", MARK),
        ("WEBHOOK_PORT", "65536"),
        ("BACKEND_PORT", "-1"),
        ("MAX_ATTEMPTS", "0"),
        ("MAX_BODY_BYTES", "10"),
        ("WEB_CONCURRENCY", "1.5"),
        ("LOCKOUT_THRESHOLD", MARK),
        ("TRUSTED_PROXIES", f"10.0.0.0/8,{MARK}"),
        ("LOG_FORMAT", MARK),
        ("LOG_LEVEL", "trace"),
        ("CALLER_FAILURE_WINDOW", MARK),
        ("LOCKOUT_DURATION", "-5m"),
        ("CALL_MAX_AGE", "0"),
        ("STEP_MAX_AGE", "0"),
        ("LOCKOUT_HARD_LIMIT", "4"),
        ("CALLER_FAILURE_LIMIT", "0"),
        ("PUBLIC_BASE_URL", "https://example.com:99999"),
        ("VAULT_ADDR", "http://v:port"),
        ("CALL_MAX_AGE", "inf"),
        ("LOCKOUT_DURATION", "nanm"),
        # Several addresses: every one is checked, none may be empty or listed twice.
        ("VAULT_ADDR", f"http://127.0.0.1:8200,ftp://{MARK}"),
        ("BACKEND_URL", f"http://b1:8081,,http://b2:8081?{MARK}"),
        ("BACKEND_URL", "http://b1:8081,http://b1:8081/"),
        ("VAULT_ADDR", "http://v:8200,"),
        ("SHUTDOWN_DRAIN", "-1"),
        ("SHUTDOWN_DRAIN", "61"),
        ("STORE_URL", f"mysql://{MARK}"),
        ("STORE_URL", f"sqlite://{MARK}/a.db"),
        ("STORE_URL", f"sqlite:///a.db?{MARK}"),
        ("STORE_URL", "sqlite:///"),
        ("STORE_URL", f"postgresql://ivr:{MARK}@db/ivr"),
        ("STORE_URL", f"postgresql://ivr@db/ivr?sslmode=require&password={MARK}"),
        ("STORE_URL", f"postgresql://db:{MARK}/ivr"),
        ("STORE_URL", f"postgresql://db/ivr#{MARK}"),
    ],
)
def test_bad_values_name_the_setting_and_never_echo_it(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}: ")
    assert MARK not in message  # short values such as "0" may be part of a range


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("4h", 14400), ("1d", 86400), (" 1.5H ", 5400)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, name="X") == seconds


@pytest.mark.parametrize(
    ("role", "env", "missing"),
    [
        ("backend", {}, "VAULT_ROLE_ID"),
        ("backend", {"VAULT_ROLE_ID": "r", "VAULT_SECRET_ID": "s"}, "BACKEND_TOKEN"),
        (
            "webhook",
            {"VAULT_ROLE_ID": "r", "VAULT_SECRET_ID": "s", "BACKEND_TOKEN": "b"},
            "TWILIO_AUTH_TOKEN",
        ),
        (
            "webhook",
            {
                "VAULT_ROLE_ID": "r",
                "VAULT_SECRET_ID": "s",
                "BACKEND_TOKEN": "b",
                "TWILIO_AUTH_TOKEN": "t",
                "PUBLIC_BASE_URL": "",
            },
            "PUBLIC_BASE_URL",
        ),
        # Service-account login: the AppRole pair is not needed, the JWT role is.
        ("backend", {"VAULT_AUTH": "jwt", "BACKEND_TOKEN": "b"}, "VAULT_JWT_ROLE"),
        (
            "backend",
            {"VAULT_AUTH": "approle", "VAULT_JWT_ROLE": "ivr-backend", "BACKEND_TOKEN": "b"},
            "VAULT_ROLE_ID",
        ),
    ],
)
def test_require_names_what_a_role_is_missing(role: str, env: dict[str, str], missing: str) -> None:
    with pytest.raises(ConfigError, match=f"^{missing}: "):
        Settings.from_environ(env).require(role)  # type: ignore[arg-type]


def test_secret_does_not_show_itself() -> None:
    secret = Secret(MARK)
    assert MARK not in repr(secret) and MARK not in str(secret) and MARK not in f"{secret}"
    assert secret.reveal() == MARK
    assert secret == Secret(MARK) and secret != Secret("other") and secret != MARK


def test_lockout_window_is_retired_with_a_reason_not_an_error() -> None:
    """LOCKOUT_WINDOW no longer does anything (failures are forgotten only on a correct PIN
    or an unlock): a service that finds it set says so once at start-up, without its
    value, and starts."""
    env = {"LOCKOUT_WINDOW": MARK, "LOCKOUT_THRESHOLD": "7"}
    assert Settings.from_environ(env).lockout_threshold == 7
    (line,) = retired_in(env)
    assert line.startswith("LOCKOUT_WINDOW: ignored") and MARK not in line
    assert retired_in({"LOCKOUT_WINDOW_FILE": "/x"}) == [line]
    assert retired_in({}) == []
    assert "lockout_window" not in {f.name for f in dataclasses.fields(Settings)}


def test_settings_that_bound_each_other() -> None:
    with pytest.raises(ConfigError, match="LOCKOUT_HARD_LIMIT: must not be below"):
        Settings.from_environ({"LOCKOUT_HARD_LIMIT": "3", "LOCKOUT_THRESHOLD": "5"})
    assert Settings.from_environ({"LOCKOUT_HARD_LIMIT": "5"}).lockout_hard_limit == 5
    # The webhook will not start with a PIN step allowed to outlive the backend's memory of
    # a call (CALL_MAX_AGE); operator commands that read CALL_MAX_AGE alone still run.
    webhook = {
        "VAULT_ROLE_ID": "r",
        "VAULT_SECRET_ID": "s",
        "BACKEND_TOKEN": "b",
        "TWILIO_AUTH_TOKEN": "t",
    }
    for env in ({"STEP_MAX_AGE": "5h"}, {"CALL_MAX_AGE": "1s"}):
        settings = Settings.from_environ({**webhook, **env})
        with pytest.raises(ConfigError, match="STEP_MAX_AGE: must not be longer than CALL_MAX_AGE"):
            settings.require("webhook")
        assert settings.require("backend") is settings
    assert Settings.from_environ({**webhook, "STEP_MAX_AGE": "4h"}).require("webhook")


def test_the_store_is_sqlite_at_store_path_unless_store_url_says_otherwise() -> None:
    assert Settings().store == StoreUrl.sqlite(".dev/accounts.sqlite3")
    assert str(Settings().store) == ".dev/accounts.sqlite3"
    assert Settings.from_environ({"STORE_PATH": "/data/a.sqlite3"}).store.path == "/data/a.sqlite3"
    for url, path in (
        ("sqlite:///rel/a.sqlite3", "rel/a.sqlite3"),
        ("sqlite:////abs/a.sqlite3", "/abs/a.sqlite3"),
    ):
        store = Settings.from_environ({"STORE_URL": url, "STORE_PATH": "ignored"}).store
        assert (store.engine, store.path) == ("sqlite", path)


@pytest.mark.parametrize(
    ("url", "display"),
    [
        (
            "postgresql://ivr@db.internal:5432/ivr?sslmode=verify-full&passfile=/run/pgpass",
            "postgresql://ivr@db.internal:5432/ivr",
        ),
        ("postgres://db/ivr", "postgresql://db/ivr"),
        ("postgresql://ivr@[::1]:6432/ivr", "postgresql://ivr@[::1]:6432/ivr"),
    ],
)
def test_a_postgresql_store_url(url: str, display: str) -> None:
    store = Settings.from_environ({"STORE_URL": url}).store
    assert (store.engine, store.display, str(store)) == ("postgresql", display, display)
    assert store.conninfo == Secret(url) and repr(store) == f"StoreUrl({display!r})"


def test_a_password_comes_only_from_store_url_file_and_never_shows(tmp_path: Path) -> None:
    url = f"postgresql://ivr:{MARK}@db:5432/ivr?sslmode=require"
    (tmp_path / "url").write_text(url + "\n")
    settings = Settings.from_environ(
        {"STORE_URL_FILE": str(tmp_path / "url"), "STORE_URL": "sqlite:///not-this"}
    )
    store = settings.store
    assert store.conninfo is not None and store.conninfo.reveal() == url
    assert store.display == "postgresql://ivr@db:5432/ivr"
    for shown in (repr(settings), str(settings), repr(store), str(store), store.display):
        assert MARK not in shown
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({"STORE_URL": url})
    assert str(caught.value) == (
        "STORE_URL: carries a password; put the URL in the file "
        "named by STORE_URL_FILE, or the password in PGPASSFILE"
    )
    (tmp_path / "bad").write_text(f"mysql://{MARK}")
    with pytest.raises(ConfigError, match=r"^STORE_URL_FILE: expected") as caught:
        Settings.from_environ({"STORE_URL_FILE": str(tmp_path / "bad")})
    assert MARK not in str(caught.value)


def test_service_account_login_needs_no_approle() -> None:
    env = {"VAULT_AUTH": "JWT", "VAULT_JWT_ROLE": "ivr-backend", "BACKEND_TOKEN": "b"}
    settings = Settings.from_environ(env).require("backend")
    assert (settings.vault_auth, settings.vault_role_id) == ("jwt", None)
    assert settings.vault_jwt_token_path == "/var/run/secrets/ivr-vault/token"
    with pytest.raises(ConfigError, match=r"^VAULT_AUTH: expected one of approle, jwt$"):
        Settings.from_environ({**env, "VAULT_AUTH": "kubernetes"})
