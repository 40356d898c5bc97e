"""Settings: one frozen object built from the environment, validated once at start-up.

Each setting is declared once, as a field of :class:`Settings`: its default (as the
environment would spell it), what it means, how its text is parsed and bounded, whether it
is a secret and which services cannot start without it. That one declaration drives
:meth:`Settings.from_environ`, the dataclass defaults, :meth:`Settings.require` and the
generated table in ``docs/configuration.md`` (``python -m service.devtools.config_doc``).
A setting's environment variable is its field name in upper case.

Every secret may also come from ``NAME_FILE`` (a path whose content is the value), so
that docker secrets and mounted volumes work without a secret in the environment.
A bad setting raises :class:`ConfigError` naming the setting, never echoing its value.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Generic, Literal, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

from service.errors import ConfigError
from service.money import MINOR_UNITS

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Role = Literal["webhook", "backend", "cli"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
N = TypeVar("N", int, float)


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


# -- parsers: the environment's text (or None when unset and without default) → a value --


class Parser(Protocol[T_co]):
    @property
    def accepts(self) -> str:
        """What text is accepted, for the documentation table."""
        ...

    def __call__(self, text: str | None, name: str) -> T_co: ...


def _required(text: str | None, name: str) -> str:
    if text is None:
        raise ConfigError(f"{name}: not set")
    return text


@dataclass(frozen=True)
class Text:
    strip: str = ""  # characters also stripped from both ends (a mount path's slashes)
    accepts: str = "text"

    def __call__(self, text: str | None, name: str) -> str:
        value = _required(text, name)
        return value.strip(self.strip) if self.strip else value


@dataclass(frozen=True)
class OptionalText:
    accepts: str = "text"

    def __call__(self, text: str | None, name: str) -> str | None:
        return text or None


@dataclass(frozen=True)
class SecretText:
    accepts: str = "text"

    def __call__(self, text: str | None, name: str) -> Secret | None:
        return Secret(text) if text else None


@dataclass(frozen=True)
class Bounded(Generic[N]):
    """A number (``float``) or a whole number (``int``) between ``low`` and ``high``."""

    kind: type[N]
    low: N
    high: N

    @property
    def _what(self) -> str:
        return "whole number" if self.kind is int else "number"

    def _show(self, bound: N) -> str:
        return str(bound) if self.kind is int else f"{bound:g}"

    @property
    def accepts(self) -> str:
        return f"{self._what}, {self._show(self.low)} to {self._show(self.high)}"

    def __call__(self, text: str | None, name: str) -> N:
        try:
            value = self.kind(_required(text, name))
        except ValueError:
            raise ConfigError(f"{name}: expected a {self._what}") from None
        if not self.low <= value <= self.high:
            raise ConfigError(
                f"{name}: must be between {self._show(self.low)} and {self._show(self.high)}"
            )
        return value


@dataclass(frozen=True)
class Duration:
    accepts: str = "duration: `90s`, `15m`, `4h`, `1d`"

    def __call__(self, text: str | None, name: str) -> float:
        return parse_duration(_required(text, name), name=name)


@dataclass(frozen=True)
class Url:
    allow_empty: bool = False

    @property
    def accepts(self) -> str:
        return "http(s) URL" + (", or empty" if self.allow_empty else "")

    def __call__(self, text: str | None, name: str) -> str:
        value = text or ""
        if not value and self.allow_empty:
            return ""
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a port
        except ValueError:
            raise ConfigError(f"{name}: the port is not a number from 0 to 65535") from None
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{name}: expected an http:// or https:// URL")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ConfigError(f"{name}: must not carry a query, fragment or credentials")
        return value.rstrip("/")


@dataclass(frozen=True)
class Urls:
    """One or more http(s) URLs, comma-separated: the replicas of one dependency, each
    checked as :class:`Url` checks one (service/web/failover.py uses them in turn)."""

    accepts: str = "http(s) URLs, comma-separated"

    def __call__(self, text: str | None, name: str) -> tuple[str, ...]:
        items = [item.strip() for item in (text or "").split(",")]
        if not all(items):
            raise ConfigError(
                f"{name}: expected one or more http(s) URLs, comma-separated, none empty"
            )
        urls = tuple(Url()(item, name) for item in items)
        if len(set(urls)) != len(urls):
            raise ConfigError(f"{name}: an address is listed twice")
        return urls


@dataclass(frozen=True)
class Networks:
    accepts: str = "comma-separated addresses or CIDRs"

    def __call__(self, text: str | None, name: str) -> tuple[IPNetwork, ...]:
        result = []
        for item in (text or "").split(","):
            if not item.strip():
                continue
            try:
                result.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ConfigError(f"{name}: not an address or CIDR list") from None
        return tuple(result)


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]
    upper: bool = False  # the value as the program wants it (log levels)

    @property
    def accepts(self) -> str:
        *first, last = [f"`{option}`" for option in self.options]
        return f"{', '.join(first)} or {last}"

    def __call__(self, text: str | None, name: str) -> str:
        value = _required(text, name).lower()
        if value not in self.options:
            raise ConfigError(f"{name}: expected one of {', '.join(self.options)}")
        return value.upper() if self.upper else value


@dataclass(frozen=True)
class Names:
    """Comma-separated names, none repeated (an empty text: none)."""

    accepts: str = "comma-separated names"

    def __call__(self, text: str | None, name: str) -> tuple[str, ...]:
        items = tuple(item.strip() for item in (text or "").split(",") if item.strip())
        if len(set(items)) != len(items):
            raise ConfigError(f"{name}: a name is listed twice")
        return items


@dataclass(frozen=True)
class Pairs:
    """``KEY=VALUE`` pairs, comma-separated, each key once (an empty text: none)."""

    accepts: str = "comma-separated `KEY=VALUE` pairs"

    def __call__(self, text: str | None, name: str) -> tuple[tuple[str, str], ...]:
        pairs = []
        for item in (text or "").split(","):
            if not item.strip():
                continue
            key, equals, value = (part.strip() for part in item.partition("="))
            if not (key and equals and value):
                raise ConfigError(f"{name}: expected KEY=VALUE pairs, comma-separated")
            pairs.append((key, value))
        if len({key for key, _ in pairs}) != len(pairs):
            raise ConfigError(f"{name}: a key is listed twice")
        return tuple(pairs)


@dataclass(frozen=True)
class CurrencyCode:
    accepts: str = f"empty, or {' or '.join(f'`{code}`' for code in MINOR_UNITS)}"

    def __call__(self, text: str | None, name: str) -> str:
        code = (text or "").upper()
        if code and code not in MINOR_UNITS:
            raise ConfigError(f"{name}: expected one of {', '.join(MINOR_UNITS)}, or empty")
        return code


@dataclass(frozen=True, repr=False)
class StoreUrl:
    """Where the account store lives (``STORE_URL``). ``conninfo`` is the PostgreSQL URL as
    given, which may carry a password; ``display`` is what logs and errors may show: no
    password, no query."""

    engine: Literal["sqlite", "postgresql"]
    path: str = ""  # sqlite: the file
    conninfo: Secret | None = None  # postgresql
    display: str = ""

    @classmethod
    def sqlite(cls, path: str) -> StoreUrl:
        return cls("sqlite", path=path, display=f"sqlite:///{path}")

    def __repr__(self) -> str:
        return f"StoreUrl({self.display!r})"

    def __str__(self) -> str:
        """For a person: a SQLite store's file, a PostgreSQL store's display URL."""
        return self.path or self.display


@dataclass(frozen=True)
class StoreUrlText:
    """``sqlite:///relative/path``, ``sqlite:////absolute/path`` (SQLAlchemy's spelling) or a
    libpq URI ``postgresql://user@host:port/db?…``. A password (``user:pw@`` or
    ``?password=``) only from ``STORE_URL_FILE``: a process's environment is seen by more
    than the process (``docker inspect``, compose files, ``/proc/PID/environ``)."""

    accepts: str = "`sqlite:///PATH` or `postgresql://USER@HOST:PORT/DB`"

    def __call__(self, text: str | None, name: str) -> StoreUrl | None:
        if not text:
            return None
        parts = urlsplit(text)
        if parts.scheme == "sqlite":
            path = parts.path[1:]
            if parts.netloc or parts.query or parts.fragment or not path:
                raise ConfigError(
                    f"{name}: expected sqlite:///relative/path or sqlite:////absolute/path"
                )
            return StoreUrl.sqlite(path)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ConfigError(f"{name}: expected a sqlite:/// or postgresql:// URL")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"{name}: the port is not a number from 0 to 65535") from None
        if parts.fragment:
            raise ConfigError(f"{name}: must not carry a fragment")
        password = parts.password is not None or "password" in parse_qs(parts.query)
        if password and not name.endswith("_FILE"):
            raise ConfigError(
                f"{name}: carries a password; put the URL in the file named by "
                f"{name}_FILE, or the password in PGPASSFILE"
            )
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
        where = host if port is None else f"{host}:{port}"
        user = f"{parts.username}@" if parts.username else ""
        return StoreUrl(
            "postgresql", conninfo=Secret(text), display=f"postgresql://{user}{where}{parts.path}"
        )


# -- the declaration ----------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """How one setting is read; kept in its field's metadata."""

    default: str | None  # as the environment would spell it; None: unset
    meaning: str
    parse: Parser[Any]
    secret: bool = False
    required_by: tuple[Role, ...] = ()
    # Required only while another setting has this value: (field name, value).
    required_when: tuple[str, str] | None = None

    def required_for(self, settings: Settings, role: Role) -> bool:
        if role not in self.required_by:
            return False
        if self.required_when is None:
            return True
        name, value = self.required_when
        return bool(getattr(settings, name) == value)

    def read(self, environ: Mapping[str, str], name: str) -> Any:
        """The parser is told the variable its text came from (``NAME_FILE`` for a file),
        so its errors name what the operator set."""
        file_var = f"{name}_FILE"
        if self.secret and environ.get(file_var):
            return self.parse(_read_file(environ[file_var], file_var), file_var)
        from_env = environ.get(name)
        return self.parse(self.default if from_env is None else from_env.strip(), name)


def _read_file(path: str, file_var: str) -> str:
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{file_var}: cannot read the file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file_var}: the file is not UTF-8 text") from None
    if not value:
        raise ConfigError(f"{file_var}: the file is empty")
    return value


def setting(
    default: str | None,
    meaning: str,
    parse: Parser[T],
    *,
    secret: bool = False,
    required_by: tuple[Role, ...] = (),
    required_when: tuple[str, str] | None = None,
) -> T:
    """A field of :class:`Settings`. Its Python default is ``default`` parsed, so that
    ``Settings()`` and ``Settings.from_environ({})`` are the same object."""
    spec = Spec(default, meaning, parse, secret, required_by, required_when)
    value: T = parse(default, "default")
    return dataclasses.field(default=value, metadata={"spec": spec})


SERVICES: tuple[Role, ...] = ("webhook", "backend")


@dataclass(frozen=True)
class Settings:
    vault_addr: tuple[str, ...] = setting(
        "http://127.0.0.1:8200",
        "Vault (or OpenBao) address; several (the nodes of a "
        "cluster), comma-separated: a request goes to the one that last worked and fails "
        "over to the next on a refused connection, a timeout, a 5xx or a sealed node.",
        Urls(),
    )
    vault_cacert: str | None = setting(
        None, "CA bundle to verify Vault's TLS certificate.", OptionalText(accepts="a file path")
    )
    vault_auth: str = setting(
        "approle",
        "How a service logs in to Vault: `approle` (VAULT_ROLE_ID and "
        "VAULT_SECRET_ID; compose, `make run`) or `jwt` (its Kubernetes service-account "
        "token, VAULT_JWT_TOKEN_PATH, as role VAULT_JWT_ROLE; docs/kubernetes.md).",
        Choice(("approle", "jwt")),
    )
    vault_role_id: Secret | None = setting(
        None,
        "AppRole role-id of this service.",
        SecretText(),
        secret=True,
        required_by=SERVICES,
        required_when=("vault_auth", "approle"),
    )
    vault_secret_id: Secret | None = setting(
        None,
        "AppRole secret-id of this service.",
        SecretText(),
        secret=True,
        required_by=SERVICES,
        required_when=("vault_auth", "approle"),
    )
    vault_jwt_role: str | None = setting(
        None,
        "The JWT auth role this service logs in as (`ivr-webhook`, `ivr-backend`); "
        "bound to one service account by `ivr-vault bootstrap --jwt-…`.",
        OptionalText(),
        required_by=SERVICES,
        required_when=("vault_auth", "jwt"),
    )
    vault_jwt_token_path: str = setting(
        "/var/run/secrets/ivr-vault/token",
        "The projected, audience-bound service-account "
        "token (VAULT_AUTH=jwt); read again at every login, as the kubelet replaces it.",
        Text(),
    )
    vault_jwt_mount: str = setting(
        "jwt", "Mount path of the JWT auth method (VAULT_AUTH=jwt).", Text(strip="/")
    )
    vault_token: Secret | None = setting(
        None,
        "A Vault token, for operator CLI commands only; services use AppRole.",
        SecretText(),
        secret=True,
    )
    vault_timeout: float = setting(
        "2.0", "Seconds to wait for any single Vault call.", Bounded(float, 0.05, 60)
    )
    transit_linger: float = setting(
        "0.001",
        "Seconds (at most 0.001) a Transit batch waits for more items while the "
        "previous batch carried several; 0: never wait.",
        Bounded(float, 0, 0.001),
    )
    transit_mount: str = setting("transit", "Mount path of the Transit engine.", Text(strip="/"))
    dtmf_key: str = setting("ivr-dtmf", "Transit key that encrypts caller entries.", Text())
    lookup_key: str = setting("ivr-lookup", "Transit HMAC key for account verifiers.", Text())
    twilio_auth_token: Secret | None = setting(
        None,
        "Twilio auth token; verifies X-Twilio-Signature (webhook).",
        SecretText(),
        secret=True,
        required_by=("webhook",),
    )
    twilio_account_sid: str | None = setting(
        None, "Twilio account SID, for `ivr-vault twilio configure-number` only.", OptionalText()
    )
    twilio_api_key: str | None = setting(
        None,
        "Twilio API key SID (with TWILIO_API_SECRET), instead of the auth token, for "
        "`ivr-vault twilio configure-number`.",
        OptionalText(),
    )
    twilio_api_secret: Secret | None = setting(
        None, "Secret of TWILIO_API_KEY.", SecretText(), secret=True
    )
    twilio_api_base_url: str = setting(
        "https://api.twilio.com",
        "Twilio REST API base URL (an egress proxy; the tests' local recorder).",
        Url(),
    )
    public_base_url: str = setting(
        "http://127.0.0.1:8080",
        "The URL Twilio calls, without path; signatures are checked against it. "
        "Empty: derive from trusted X-Forwarded-* headers.",
        Url(allow_empty=True),
    )
    trusted_proxies: tuple[IPNetwork, ...] = setting(
        "", "Addresses/CIDRs whose X-Forwarded-Proto/Host are honoured.", Networks()
    )
    backend_url: tuple[str, ...] = setting(
        "http://127.0.0.1:8081",
        "Where the webhook finds the backend; several (replicas), "
        "comma-separated: lookups take turns, and one that gets no answer or a 5xx is sent "
        "to the next (its Idempotency-Key makes that safe).",
        Urls(),
    )
    backend_token: Secret | None = setting(
        None,
        "Bearer token between webhook and backend.",
        SecretText(),
        secret=True,
        required_by=SERVICES,
    )
    backend_timeout: float = setting(
        "2.0", "Seconds the webhook waits for the backend.", Bounded(float, 0.05, 12)
    )
    request_budget: float = setting(
        "2.5",
        "Seconds a caller's webhook request may take; past it the caller hears the "
        "calm goodbye (Twilio waits 15 s; a caller should not). What is left of it goes to "
        "the backend with each lookup, which gives up on Vault and the store in time. The "
        "backend bounds a lookup by its own value too.",
        Bounded(float, 0.1, 3),
    )
    webhook_host: str = setting("127.0.0.1", "Webhook listen address.", Text())
    webhook_port: int = setting("8080", "Webhook listen port.", Bounded(int, 0, 65535))
    backend_host: str = setting("127.0.0.1", "Backend listen address.", Text())
    backend_port: int = setting("8081", "Backend listen port.", Bounded(int, 0, 65535))
    store_url: StoreUrl | None = setting(
        None,
        "The account store (backend, CLI): `sqlite:///PATH`, one file on one machine, "
        "or `postgresql://…`, one store shared by every backend replica (docs/deployment.md). "
        "A password only in STORE_URL_FILE, or libpq's PGPASSFILE. Unset: SQLite at "
        "STORE_PATH.",
        StoreUrlText(),
        secret=True,
    )
    store_path: str = setting(
        ".dev/accounts.sqlite3",
        "The SQLite account store's file while STORE_URL is unset "
        "(short for `STORE_URL=sqlite:///PATH`).",
        Text(),
    )
    backup_recipients: tuple[str, ...] = setting(
        "",
        "`ivr-vault backup`: the operators' age public keys (`age1…`, comma-separated) "
        "a backup is encrypted to; `--recipient` adds more. Public keys, so no *_FILE "
        "(docs/backup.md).",
        Names(),
    )
    log_format: str = setting(
        "json",
        "`json`: one object per line; `console`: for a person at a terminal.",
        Choice(("json", "console")),
    )
    log_level: str = setting(
        "INFO",
        "Minimum log level of the services (`serve`, `dev`, compose's `operator` "
        "steps). Other commands log warnings and errors (or only what this allows), "
        "INFO with `-v`, DEBUG with `-vv`.",
        Choice(("debug", "info", "warning", "error"), upper=True),
    )
    max_body_bytes: int = setting(
        "16384", "Largest request body accepted (413 above).", Bounded(int, 1024, 1 << 20)
    )
    voice_concurrency: int = setting(
        "128",
        "Webhook: `/voice*` requests one process handles at once (counted once the "
        'body is in); more hear a calm goodbye ("please call again later"), never a 5xx. '
        "Above the bench's highest concurrency (64).",
        Bounded(int, 1, 100_000),
    )
    max_attempts: int = setting(
        "3", "Tries a caller gets for one entry before goodbye.", Bounded(int, 1, 10)
    )
    call_max_age: float = setting(
        "4h",
        "Longest time a call can hold a ciphertext; `keys retire` keeps newer versions.",
        Duration(),
    )
    step_max_age: float = setting(
        "5m",
        "Oldest a PIN step's action URL may be when Twilio posts it (its issue time "
        "is in the signed URL); older: the caller hears a goodbye, with no lookup. At most "
        "CALL_MAX_AGE; longer than the Gather timeout (10 s).",
        Duration(),
    )
    lockout_threshold: int = setting(
        "5",
        "Consecutive wrong PINs that lock a card; every further THRESHOLD wrong PINs "
        "(no correct PIN in between) lock it again.",
        Bounded(int, 1, 100),
    )
    lockout_duration: float = setting(
        "15m",
        "How long the first lock lasts; the n-th lasts LOCKOUT_DURATION * 2^(n-1).",
        Duration(),
    )
    lockout_hard_limit: int = setting(
        "10",
        "Consecutive wrong PINs after which a card stays locked until "
        "`ivr-vault accounts unlock`. Failures are forgotten only on a correct PIN or an "
        "unlock, never by time.",
        Bounded(int, 1, 1000),
    )
    caller_failure_limit: int = setting(
        "10",
        "Failed lookups (unknown account, wrong card or PIN, locked account) from one "
        "caller number within CALLER_FAILURE_WINDOW, after which that number hears the "
        "goodbye with no lookup. Withheld numbers share one count, with its own limit "
        "(WITHHELD_FAILURE_LIMIT).",
        Bounded(int, 1, 100_000),
    )
    caller_failure_window: float = setting(
        "24h", "Sliding window of CALLER_FAILURE_LIMIT.", Duration()
    )
    withheld_failure_limit: int = setting(
        "100",
        "Failed lookups from withheld (or unrecognisable) caller IDs, which all share "
        "one bucket, within WITHHELD_FAILURE_WINDOW, after which every withheld caller hears "
        "the goodbye with no lookup (docs/security.md: the numbers).",
        Bounded(int, 1, 1_000_000),
    )
    withheld_failure_window: float = setting(
        "10m",
        "Sliding window of WITHHELD_FAILURE_LIMIT: the longest one attacker's burst "
        "cuts withheld callers off after it stops.",
        Duration(),
    )
    account_number_digits: int = setting(
        "8",
        "Digits of the account number a caller types at the first prompt (and enrolment reads).",
        Bounded(int, 4, 16),
    )
    caller_id_requires_attestation: str = setting(
        "off",
        "`on`: the registered-phone path (the caller presses star) identifies only "
        "calls Twilio attested with STIR/SHAKEN `TN-Validation-Passed-A`; any other is a "
        "failure, like a wrong PIN.",
        Choice(("off", "on")),
    )
    legacy_card_lookup: str = setting(
        "auto",
        "Accounts migrated from before account numbers, not given one yet, found by "
        "their card last-4 alone: `auto` (while the store holds any, checked at backend "
        "start), `on` or `off`. `ivr-vault doctor` counts them.",
        Choice(("auto", "on", "off")),
    )
    web_concurrency: int = setting(
        "1", "uvicorn worker processes per service.", Bounded(int, 1, 64)
    )
    shutdown_drain: float = setting(
        "0",
        "Seconds a service keeps serving after SIGTERM, /readyz answering 503 "
        "meanwhile, so that a load balancer's health checks take it out of rotation before "
        "it stops accepting connections; then requests in flight finish. 0: stop accepting "
        "at once. Ctrl-C never waits; not applied with WEB_CONCURRENCY above 1.",
        Bounded(float, 0, 60),
    )
    locale: str = setting(
        "en-US",
        "What callers hear by default: a locale with a message catalog "
        "(`en-US`, `ja-JP`; docs/locales.md).",
        Text(),
    )
    locale_by_number: tuple[tuple[str, str], ...] = setting(
        "",
        "The locale of each called number (Twilio's `To`), as `+E164=LOCALE` pairs; "
        "a number not listed hears LOCALE.",
        Pairs(),
    )
    locale_voices: tuple[tuple[str, str], ...] = setting(
        "",
        "The `<Say>` voice of a locale, as `LOCALE=VOICE` pairs (`ja-JP=Polly.Takumi`); "
        "a voice of another language is refused. Unlisted: the locale's default "
        "(en-US Polly.Joanna, ja-JP Polly.Mizuki).",
        Pairs(),
    )
    language_menu: tuple[str, ...] = setting(
        "",
        "Locales offered in a language menu before the first prompt, in the order of "
        "their keys (`ja-JP,en-US`: 1 for Japanese, 2 for English); at least two, or "
        "empty for no menu.",
        Names(),
    )
    balance_currency: str = setting(
        "",
        "The currency of every balance: enrolment checks a balance against its minor "
        "units (JPY: none) and callers hear it named. Empty: a plain number, as enrolled.",
        CurrencyCode(),
    )

    @property
    def store(self) -> StoreUrl:
        """The account store: STORE_URL, else the SQLite file at STORE_PATH."""
        return self.store_url or StoreUrl.sqlite(self.store_path)

    def __post_init__(self) -> None:
        # Settings that bound each other; each field alone was checked by its parser.
        if self.lockout_hard_limit < self.lockout_threshold:
            raise ConfigError("LOCKOUT_HARD_LIMIT: must not be below LOCKOUT_THRESHOLD")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            **{
                field.name: spec(field).read(env, env_name(field))
                for field in dataclasses.fields(cls)
            }
        )

    def require(self, role: Role) -> Settings:
        """Fail start-up with one line naming what this role is missing."""
        self.check_consistent(role)
        for field in dataclasses.fields(self):
            if spec(field).required_for(self, role) and getattr(self, field.name) is None:
                name = env_name(field)
                raise ConfigError(f"{name}: not set (nor {name}_FILE)")
        return self

    def check_consistent(self, role: Role) -> None:
        """The rules between settings that ``role`` depends on (``ivr-vault doctor`` checks
        them without the role's secrets at hand)."""
        if role == "webhook" and not self.public_base_url and not self.trusted_proxies:
            raise ConfigError(
                "PUBLIC_BASE_URL: empty, and TRUSTED_PROXIES is empty too; "
                "signatures could not be checked against any URL"
            )
        # The backend remembers a call's answers for CALL_MAX_AGE: a PIN step the webhook
        # still accepts must never be older than that memory.
        if role == "webhook" and self.step_max_age > self.call_max_age:
            raise ConfigError("STEP_MAX_AGE: must not be longer than CALL_MAX_AGE")


# Settings that once existed and are now ignored: name → why. A service that finds one in its
# environment says so once at start-up (``ivr-vault serve``), rather than let an operator
# believe it still applies.
RETIRED: Final[Mapping[str, str]] = MappingProxyType(
    {
        "LOCKOUT_WINDOW": "ignored: wrong PINs are forgotten only on a correct PIN or "
        "`ivr-vault accounts unlock`, never by time",
    }
)


def retired_in(environ: Mapping[str, str]) -> list[str]:
    """One line per retired setting found in ``environ`` (its name and why; never its
    value)."""
    return [
        f"{name}: {why}"
        for name, why in RETIRED.items()
        if name in environ or f"{name}_FILE" in environ
    ]


def spec(field: dataclasses.Field[Any]) -> Spec:
    found: Spec = field.metadata["spec"]
    return found


def env_name(field: dataclasses.Field[Any]) -> str:
    return field.name.upper()
