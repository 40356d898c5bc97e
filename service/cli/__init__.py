"""The ``ivr-vault`` command line (also ``python -m service``).

Secrets never come from argv: the PIN and card digits from a prompt or stdin, tokens
and credentials from the environment or ``*_FILE``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx

from service.errors import ConfigError, IvrVaultError
from service.settings import Settings

if TYPE_CHECKING:
    from starlette.applications import Starlette

Command = Callable[[argparse.Namespace, Settings], int]

DEV_DIR = Path(".dev")


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    settings.require(args.role)
    if args.check:
        print(f"ivr-vault: {args.role} configuration is valid")
        return 0
    if args.role == "webhook":
        from service.webhook.app import create_webhook_app as factory
        host, port = settings.webhook_host, settings.webhook_port
    else:
        from service.backend.app import create_backend_app as factory
        host, port = settings.backend_host, settings.backend_port
    workers = settings.web_concurrency
    if workers > 1:
        # Each worker is its own process: it builds its app (Vault login, coalescers,
        # metrics) in its own lifespan through this module's factory. /metrics then
        # answers for the worker that serves the scrape only.
        uvicorn.run(f"service.cli:{args.role}_app", factory=True, workers=workers,
                    host=host, port=port, **uvicorn_options())
    else:
        uvicorn.run(factory(settings), host=host, port=port, **uvicorn_options())
    return 0


def _worker_settings() -> Settings:
    """In a uvicorn worker process: read the environment and install the log pipeline
    (the scrubber) before anything can log, as main() does for a single process."""
    from service.logs.config import configure_logging

    settings = Settings.from_environ()
    fmt: Literal["json", "console"] = "console" if settings.log_format == "console" else "json"
    configure_logging(fmt=fmt, level=settings.log_level, background=True)
    return settings


def webhook_app() -> Starlette:
    """uvicorn factory for ``serve webhook`` with WEB_CONCURRENCY > 1."""
    from service.webhook.app import create_webhook_app

    return create_webhook_app(_worker_settings())


def backend_app() -> Starlette:
    """uvicorn factory for ``serve backend`` with WEB_CONCURRENCY > 1."""
    from service.backend.app import create_backend_app

    return create_backend_app(_worker_settings())


def uvicorn_options() -> dict[str, Any]:
    """How every service process (and the bench baseline) runs uvicorn.

    uvloop and httptools are named, not left to "auto", so that a missing extra fails
    loudly instead of silently falling back to the slower asyncio/h11 (bench/RESULTS.md,
    "uvicorn settings"). One worker per process: every worker would hold its own Vault
    login, its own coalescer (halving batch sizes) and its own /metrics registry; scale
    out with more processes or replicas instead, which the stateless call flow allows.
    """
    from service.logs.config import UVICORN_LOG_KWARGS

    return {
        "loop": "uvloop",
        "http": "httptools",
        # Forwarded headers are judged by the webhook itself against TRUSTED_PROXIES.
        "proxy_headers": False,
        "server_header": False,
        "date_header": False,
        "timeout_graceful_shutdown": 10,
        **UVICORN_LOG_KWARGS,
    }


def _bootstrap(args: argparse.Namespace, settings: Settings) -> int:
    from service.vault.bootstrap import bootstrap, issue_credentials
    from service.vault.client import VaultClient

    if settings.vault_token is None:
        raise ConfigError("VAULT_TOKEN: not set (bootstrap needs an administrative token)")
    admin = VaultClient(settings.vault_addr, settings.vault_token,
                        timeout=max(settings.vault_timeout, 10))
    layout = bootstrap(admin)
    targets = dict(item.split("=", 1) for item in args.credentials)
    for role, creds in issue_credentials(admin, targets, approle_mount=layout.approle_mount
                                         ).items():
        creds.write(Path(targets[role]))
        print(f"ivr-vault: wrote {role} credentials to {targets[role]}")
    print("ivr-vault: bootstrap complete")
    return 0


def _auth_token(settings: Settings) -> str:
    if settings.twilio_auth_token is not None:
        return settings.twilio_auth_token.reveal()
    path = DEV_DIR / "twilio-auth-token"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    raise ConfigError("TWILIO_AUTH_TOKEN: not set, and no .dev/twilio-auth-token "
                      "(is `make run` running in this directory?)")


def _call(args: argparse.Namespace, settings: Settings) -> int:
    from service.devtools.caller import Caller

    url = args.url or settings.public_base_url or "http://127.0.0.1:8080"
    entries = [args.card, args.pin]
    with httpx.Client(timeout=20, verify=args.cacert or True) as client:
        caller = Caller(url, _auth_token(settings), client)
        result = caller.play([e for e in entries if e is not None])
    return 0 if result.completed else 1


def _read_secret_digits(label: str) -> str:
    """From a prompt on a terminal, else one line of stdin; never from argv."""
    value = getpass.getpass(f"{label}: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
    if not (len(value) == 4 and value.isascii() and value.isdigit()):
        raise ConfigError(f"{label}: expected exactly 4 digits")
    return value


def _accounts_add(args: argparse.Namespace, settings: Settings) -> int:
    from service.backend.enrolment import add_account

    card = _read_secret_digits("card last 4 digits")
    pin = _read_secret_digits("PIN")
    add_account(settings, account=args.account, balance=args.balance, last4=card, pin=pin)
    print(f"ivr-vault: account {args.account} provisioned")
    return 0


def _accounts_seed_demo(args: argparse.Namespace, settings: Settings) -> int:
    """The tutorial's test account (card 1234, PIN 4321), for docker compose's init step."""
    from service.backend.enrolment import DEMO_ACCOUNT, DEMO_CARD, DEMO_PIN, add_account

    add_account(settings, account=DEMO_ACCOUNT[0], balance=DEMO_ACCOUNT[1], last4=DEMO_CARD,
                pin=DEMO_PIN)
    print(f"ivr-vault: demo account {DEMO_ACCOUNT[0]} provisioned")
    return 0


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    from service.devtools.launcher import run_dev

    return run_dev(settings, os.environ, state_dir=DEV_DIR)


# Command groups that live in their own modules: each exposes
# ``register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None`` and sets
# ``func`` (a :data:`Command`) on its parsers.
REGISTRARS: tuple[str, ...] = ("service.cli.keys", "service.cli.legacy", "service.cli.twilio")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="ivr-vault", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in REGISTRARS:
        importlib.import_module(module).register(sub)

    p = sub.add_parser("dev", help="start a dev Vault, bootstrap it, run backend and webhook")
    p.set_defaults(func=_dev)

    p = sub.add_parser("serve", help="run one service")
    p.add_argument("role", choices=("webhook", "backend"))
    p.add_argument("--check", action="store_true", help="validate configuration and exit")
    p.set_defaults(func=_serve)

    p = sub.add_parser("bootstrap", help="create keys, policies and AppRoles (idempotent)")
    p.add_argument("--credentials", action="append", default=[], metavar="ROLE=DIR",
                   help="write ROLE's role_id and secret_id into DIR (repeatable)")
    p.set_defaults(func=_bootstrap)

    p = sub.add_parser("call", help="play Twilio against a running webhook")
    p.add_argument("--card", help="keys to press at the card prompt")
    p.add_argument("--pin", help="keys to press at the PIN prompt")
    p.add_argument("--url", help="webhook base URL (default PUBLIC_BASE_URL)")
    p.add_argument("--cacert", help="CA bundle for an https URL")
    p.set_defaults(func=_call)

    accounts = sub.add_parser("accounts", help="account store").add_subparsers(
        dest="accounts_command", required=True)
    p = accounts.add_parser("add", help="provision an account; card and PIN from a prompt "
                                        "or stdin, never argv")
    p.add_argument("--account", required=True)
    p.add_argument("--balance", required=True)
    p.set_defaults(func=_accounts_add)
    p = accounts.add_parser("seed-demo", help="provision the demo account (card 1234, PIN "
                                              "4321) with the backend's identity")
    p.set_defaults(func=_accounts_seed_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from service.logs.config import configure_logging

    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_environ()
        console = args.command == "dev" or settings.log_format == "console"
        # A service writes its lines from a thread, off the request path; a CLI command
        # (and what it prints around its log lines) stays in order, synchronously.
        configure_logging(fmt="console" if console else "json", level=settings.log_level,
                          background=args.command == "serve")
        func: Command = args.func
        return func(args, settings)
    except ConfigError as exc:
        print(f"ivr-vault: configuration error: {exc}", file=sys.stderr)
        return 2
    except IvrVaultError as exc:
        print(f"ivr-vault: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
