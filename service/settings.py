"""Settings: one frozen object built from the environment, validated once at start-up.

Every secret may also come from ``NAME_FILE`` (a path whose content is the value), so
that docker secrets and mounted volumes work without a secret in the environment.
A bad setting raises :class:`ConfigError` naming the setting, never echoing its value.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from service.errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Role = Literal["webhook", "backend", "cli"]


class Secret:
    """A string that does not show itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class SettingSpec:
    name: str
    default: str | None
    meaning: str
    secret: bool = False


# The README's settings table is generated from, and tested against, this list.
SPECS: tuple[SettingSpec, ...] = (
    SettingSpec("VAULT_ADDR", "http://127.0.0.1:8200", "Vault (or OpenBao) address."),
    SettingSpec("VAULT_CACERT", None, "CA bundle to verify Vault's TLS certificate."),
    SettingSpec("VAULT_ROLE_ID", None, "AppRole role-id of this service.",
                secret=True),
    SettingSpec("VAULT_SECRET_ID", None,
                "AppRole secret-id of this service.", secret=True),
    SettingSpec("VAULT_TOKEN", None,
                "A Vault token, for operator CLI commands only; services use AppRole.",
                secret=True),
    SettingSpec("VAULT_TIMEOUT", "2.0", "Seconds to wait for any single Vault call."),
    SettingSpec("TRANSIT_LINGER", "0.001",
                "Seconds (at most 0.001) a Transit batch waits for more items while the "
                "previous batch carried several; 0: never wait."),
    SettingSpec("TRANSIT_MOUNT", "transit", "Mount path of the Transit engine."),
    SettingSpec("DTMF_KEY", "ivr-dtmf", "Transit key that encrypts caller entries."),
    SettingSpec("LOOKUP_KEY", "ivr-lookup", "Transit HMAC key for account verifiers."),
    SettingSpec("TWILIO_AUTH_TOKEN", None,
                "Twilio auth token; verifies X-Twilio-Signature (webhook).", secret=True),
    SettingSpec("TWILIO_ACCOUNT_SID", None,
                "Twilio account SID, for `ivr-vault twilio configure-number` only."),
    SettingSpec("TWILIO_API_KEY", None,
                "Twilio API key SID (with TWILIO_API_SECRET), instead of the auth token, for "
                "`ivr-vault twilio configure-number`."),
    SettingSpec("TWILIO_API_SECRET", None,
                "Secret of TWILIO_API_KEY.", secret=True),
    SettingSpec("TWILIO_API_BASE_URL", "https://api.twilio.com",
                "Twilio REST API base URL (an egress proxy; the tests' local recorder)."),
    SettingSpec("PUBLIC_BASE_URL", "http://127.0.0.1:8080",
                "The URL Twilio calls, without path; signatures are checked against it. "
                "Empty: derive from trusted X-Forwarded-* headers."),
    SettingSpec("TRUSTED_PROXIES", "",
                "Comma-separated addresses/CIDRs whose X-Forwarded-Proto/Host are honoured."),
    SettingSpec("BACKEND_URL", "http://127.0.0.1:8081", "Where the webhook finds the backend."),
    SettingSpec("BACKEND_TOKEN", None,
                "Bearer token between webhook and backend.",
                secret=True),
    SettingSpec("BACKEND_TIMEOUT", "2.0", "Seconds the webhook waits for the backend."),
    SettingSpec("WEBHOOK_HOST", "127.0.0.1", "Webhook listen address."),
    SettingSpec("WEBHOOK_PORT", "8080", "Webhook listen port."),
    SettingSpec("BACKEND_HOST", "127.0.0.1", "Backend listen address."),
    SettingSpec("BACKEND_PORT", "8081", "Backend listen port."),
    SettingSpec("STORE_PATH", ".dev/accounts.sqlite3", "SQLite account store (backend, CLI)."),
    SettingSpec("LOG_FORMAT", "json", "`json` (one object per line) or `console`."),
    SettingSpec("LOG_LEVEL", "INFO", "Minimum log level."),
    SettingSpec("MAX_BODY_BYTES", "16384", "Largest request body accepted (413 above)."),
    SettingSpec("MAX_ATTEMPTS", "3", "Tries a caller gets for one entry before goodbye."),
    SettingSpec("CALL_MAX_AGE", "4h",
                "Longest time a call can hold a ciphertext; `keys retire` keeps newer versions."),
    SettingSpec("LOCKOUT_THRESHOLD", "5", "Wrong PINs for one card before it is locked."),
    SettingSpec("LOCKOUT_WINDOW", "15m", "Window in which wrong PINs are counted."),
    SettingSpec("LOCKOUT_DURATION", "15m", "How long a locked card stays locked."),
    SettingSpec("WEB_CONCURRENCY", "1", "uvicorn worker processes per service."),
)

_SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


def parse_duration(text: str, *, name: str) -> float:
    """``90``, ``90s``, ``15m``, ``4h``, ``30d`` → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip().lower()
    factor = 1
    if raw and raw[-1] in units:
        factor = units[raw[-1]]
        raw = raw[:-1]
    try:
        value = float(raw) * factor
    except ValueError:
        raise ConfigError(f"{name}: expected a duration such as 90s, 15m or 4h") from None
    if not 0 < value < math.inf:
        raise ConfigError(f"{name}: must be positive and finite")
    return value


class _Reader:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, name: str) -> str | None:
        spec = _SPEC_BY_NAME[name]
        file_var = f"{name}_FILE"
        if spec.secret and self._environ.get(file_var):
            path = Path(self._environ[file_var])
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"{file_var}: cannot read the file ({exc.strerror})") from None
            except UnicodeDecodeError:
                raise ConfigError(f"{file_var}: the file is not UTF-8 text") from None
            if not value:
                raise ConfigError(f"{file_var}: the file is empty")
            return value
        from_env = self._environ.get(name)
        if from_env is None:
            return spec.default
        return from_env.strip()

    def text(self, name: str) -> str:
        value = self.raw(name)
        if value is None:
            raise ConfigError(f"{name}: not set")
        return value

    def secret(self, name: str) -> Secret | None:
        value = self.raw(name)
        return Secret(value) if value else None

    def number(self, name: str, *, low: float, high: float) -> float:
        try:
            value = float(self.text(name))
        except ValueError:
            raise ConfigError(f"{name}: expected a number") from None
        if not low <= value <= high:
            raise ConfigError(f"{name}: must be between {low:g} and {high:g}")
        return value

    def integer(self, name: str, *, low: int, high: int) -> int:
        try:
            value = int(self.text(name))
        except ValueError:
            raise ConfigError(f"{name}: expected a whole number") from None
        if not low <= value <= high:
            raise ConfigError(f"{name}: must be between {low} and {high}")
        return value

    def url(self, name: str, *, allow_empty: bool = False) -> str:
        value = self.raw(name) or ""
        if not value and allow_empty:
            return ""
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{name}: expected an http:// or https:// URL")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ConfigError(f"{name}: must not carry a query, fragment or credentials")
        return value.rstrip("/")

    def networks(self, name: str) -> tuple[IPNetwork, ...]:
        result = []
        for item in (self.raw(name) or "").split(","):
            if not item.strip():
                continue
            try:
                result.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ConfigError(f"{name}: not an address or CIDR list") from None
        return tuple(result)

    def choice(self, name: str, options: tuple[str, ...]) -> str:
        value = self.text(name).lower()
        if value not in options:
            raise ConfigError(f"{name}: expected one of {', '.join(options)}")
        return value


@dataclass(frozen=True)
class Settings:
    vault_addr: str = "http://127.0.0.1:8200"
    vault_cacert: str | None = None
    vault_role_id: Secret | None = None
    vault_secret_id: Secret | None = None
    vault_token: Secret | None = None
    vault_timeout: float = 2.0
    transit_linger: float = 0.001
    transit_mount: str = "transit"
    dtmf_key: str = "ivr-dtmf"
    lookup_key: str = "ivr-lookup"
    twilio_auth_token: Secret | None = None
    public_base_url: str = "http://127.0.0.1:8080"
    trusted_proxies: tuple[IPNetwork, ...] = ()
    backend_url: str = "http://127.0.0.1:8081"
    backend_token: Secret | None = None
    backend_timeout: float = 2.0
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8080
    backend_host: str = "127.0.0.1"
    backend_port: int = 8081
    store_path: str = ".dev/accounts.sqlite3"
    log_format: str = "json"
    log_level: str = "INFO"
    max_body_bytes: int = 16384
    max_attempts: int = 3
    call_max_age: float = 4 * 3600
    lockout_threshold: int = 5
    lockout_window: float = 900
    lockout_duration: float = 900
    web_concurrency: int = 1
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        r = _Reader(env)
        return cls(
            vault_addr=r.url("VAULT_ADDR"),
            vault_cacert=r.raw("VAULT_CACERT") or None,
            vault_role_id=r.secret("VAULT_ROLE_ID"),
            vault_secret_id=r.secret("VAULT_SECRET_ID"),
            vault_token=r.secret("VAULT_TOKEN"),
            vault_timeout=r.number("VAULT_TIMEOUT", low=0.05, high=60),
            transit_linger=r.number("TRANSIT_LINGER", low=0, high=0.001),
            transit_mount=r.text("TRANSIT_MOUNT").strip("/"),
            dtmf_key=r.text("DTMF_KEY"),
            lookup_key=r.text("LOOKUP_KEY"),
            twilio_auth_token=r.secret("TWILIO_AUTH_TOKEN"),
            public_base_url=r.url("PUBLIC_BASE_URL", allow_empty=True),
            trusted_proxies=r.networks("TRUSTED_PROXIES"),
            backend_url=r.url("BACKEND_URL"),
            backend_token=r.secret("BACKEND_TOKEN"),
            backend_timeout=r.number("BACKEND_TIMEOUT", low=0.05, high=12),
            webhook_host=r.text("WEBHOOK_HOST"),
            webhook_port=r.integer("WEBHOOK_PORT", low=0, high=65535),
            backend_host=r.text("BACKEND_HOST"),
            backend_port=r.integer("BACKEND_PORT", low=0, high=65535),
            store_path=r.text("STORE_PATH"),
            log_format=r.choice("LOG_FORMAT", ("json", "console")),
            log_level=r.choice("LOG_LEVEL", ("debug", "info", "warning", "error")).upper(),
            max_body_bytes=r.integer("MAX_BODY_BYTES", low=1024, high=1 << 20),
            max_attempts=r.integer("MAX_ATTEMPTS", low=1, high=10),
            call_max_age=parse_duration(r.text("CALL_MAX_AGE"), name="CALL_MAX_AGE"),
            lockout_threshold=r.integer("LOCKOUT_THRESHOLD", low=1, high=100),
            lockout_window=parse_duration(r.text("LOCKOUT_WINDOW"), name="LOCKOUT_WINDOW"),
            lockout_duration=parse_duration(r.text("LOCKOUT_DURATION"), name="LOCKOUT_DURATION"),
            web_concurrency=r.integer("WEB_CONCURRENCY", low=1, high=64),
            environ=dict(env),
        )

    def require(self, role: Role) -> Settings:
        """Fail start-up with one line naming what this role is missing."""
        needs: list[tuple[str, object]] = []
        if role in ("webhook", "backend"):
            needs += [("VAULT_ROLE_ID", self.vault_role_id),
                      ("VAULT_SECRET_ID", self.vault_secret_id),
                      ("BACKEND_TOKEN", self.backend_token)]
        if role == "webhook":
            needs.append(("TWILIO_AUTH_TOKEN", self.twilio_auth_token))
            if not self.public_base_url and not self.trusted_proxies:
                raise ConfigError(
                    "PUBLIC_BASE_URL: empty, and TRUSTED_PROXIES is empty too; "
                    "signatures could not be checked against any URL")
        for name, value in needs:
            if value is None:
                raise ConfigError(f"{name}: not set (nor {name}_FILE)")
        return self
