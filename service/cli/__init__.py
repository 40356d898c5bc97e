"""The ``ivr-vault`` command line (also ``python -m service``).

Secrets never come from argv: the PIN and card digits from a prompt or stdin, tokens
and credentials from the environment or ``*_FILE``.

Operator commands are quiet: they log warnings and errors only, ``-v`` adds INFO and
``-vv`` DEBUG; ``serve``, ``dev`` and ``operator`` (compose's steps) log what a service
logs (``LOG_LEVEL``). An error is
one line on stderr, ``ivr-vault: …``, never a traceback. In a ``make run`` directory with no
``VAULT_ADDR``, a command uses the dev Vault (``service/cli/devenv.py``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from service.errors import BadInput, ConfigError, IvrVaultError
from service.settings import Settings

Command = Callable[[argparse.Namespace, Settings], int]

# What ``ivr-vault --help`` says: plain text for the person at the terminal.
DESCRIPTION = (
    "The ivr-vault command line (also: python -m service). Secrets never come from the "
    "command line: card and PIN digits from a prompt or stdin, tokens and credentials "
    "from the environment or NAME_FILE. Operator commands print warnings and errors only "
    "(-v adds information, -vv debugging); an error is one line, 'ivr-vault: ...'. In a "
    "'make run' directory with no VAULT_ADDR set, commands use the dev Vault there."
)

# One module per command group. Each exposes
# ``register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None`` and sets
# ``func`` (a :data:`Command`) on its parsers; a command that may use ``make run``'s Vault
# also sets ``dev_identity`` (the AppRole it runs as there; service/cli/devenv.py). Imported
# when the parser is built, so that a command pulls in only what it runs.
REGISTRARS: tuple[str, ...] = tuple(
    f"service.cli.{name}"
    for name in (
        "dev",
        "serve",
        "bootstrap",
        "call",
        "accounts",
        "callers",
        "keys",
        "legacy",
        "twilio",
        "backup",
        "operator",
        "doctor",
        "store",
    )
)

# Commands whose logs are a service's: LOG_LEVEL applies, and -v changes nothing. With
# the services: `operator`, compose's unattended steps around Vault (`unseal --watch` runs
# for as long as Vault does), whose lines are the only record in `docker compose logs`.
SERVICE_COMMANDS = frozenset({"serve", "dev", "operator"})

_VERBOSE_HELP = "-v: also INFO log lines, -vv: DEBUG (operator commands are quiet otherwise)"


def _add_verbose(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``-v`` before or after the command: ``ivr-vault -v keys status`` and ``ivr-vault
    keys status -v`` (a subcommand's copy does not reset what the top one counted)."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        help=_VERBOSE_HELP,
        default=0 if top else argparse.SUPPRESS,
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_verbose(child, top=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ivr-vault", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in REGISTRARS:
        importlib.import_module(module).register(sub)
    _add_verbose(parser, top=True)
    return parser


def log_level(command: str, verbose: int, settings_level: str) -> str:
    """A service's LOG_LEVEL; for an operator command WARNING (or LOG_LEVEL when that is
    quieter), INFO with -v, DEBUG with -vv."""
    if command in SERVICE_COMMANDS:
        return settings_level
    if verbose >= 2:
        return "DEBUG"
    if verbose == 1:
        return "INFO"
    quiet = max(logging.WARNING, logging.getLevelName(settings_level))
    return str(logging.getLevelName(quiet))


def _environment(args: argparse.Namespace, environ: Mapping[str, str]) -> Mapping[str, str]:
    """The environment the command runs with: with make run's Vault when it is in this
    directory and the command may use it (one line on stderr says so)."""
    from service.cli.devenv import dev_environment, find_dev_env, unsourced

    identity: str | None = getattr(args, "dev_identity", None)
    if identity is not None:
        environ, dropped = unsourced(environ)  # each command as its own identity, not root
        if dropped:
            print(f"ivr-vault: {dropped}", file=sys.stderr, flush=True)
    dev = find_dev_env(environ) if identity is not None else None
    args.dev_env = dev
    if dev is None or identity is None:
        return environ
    env, said = dev_environment(environ, identity, dev)
    print(f"ivr-vault: {said}", file=sys.stderr, flush=True)
    return env


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    from service.logs.config import configure_logging

    args = build_parser().parse_args(argv)
    verbose = int(args.verbose or 0)
    try:
        environ = _environment(args, os.environ)
        try:
            settings = Settings.from_environ(environ)
        except ConfigError as exc:
            if not getattr(args, "reports_settings", False):
                raise
            # doctor: invalid settings are its first failed check, not the end of it
            args.settings_error = exc
            settings = Settings()
        console = args.command == "dev" or settings.log_format == "console"
        # A service joins the lines of one event-loop iteration into one write, off the
        # request path; a CLI command (and what it prints around its log lines) stays in
        # order, one write per line.
        configure_logging(
            fmt="console" if console else "json",
            level=log_level(args.command, verbose, settings.log_level),
            background=args.command == "serve",
            listen_hosts=frozenset({settings.webhook_host, settings.backend_host}),
        )
        func: Command = args.func
        return func(args, settings)
    except ConfigError as exc:
        print(f"ivr-vault: configuration error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except BadInput as exc:
        print(f"ivr-vault: bad input: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except IvrVaultError as exc:
        print(f"ivr-vault: {type(exc).__name__}: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a foreign exception no boundary translated
        return _unexpected(exc, verbose)


def _unexpected(exc: Exception, verbose: int) -> int:
    """One line, its type and its message digit-masked (a foreign message may quote what
    it was given); with -v the traceback too, through the log pipeline's scrubber."""
    import structlog

    from service.logs.scrubbing import mask_digits

    if verbose:
        structlog.get_logger("ivr.cli").error("unexpected error", exc_info=exc)
    detail = _one_line(mask_digits(str(exc)))[:200]
    hint = "" if verbose else " (-v shows where)"
    print(
        f"ivr-vault: unexpected error: {type(exc).__name__}"
        + (f": {detail}" if detail else "")
        + hint,
        file=sys.stderr,
    )
    return 1
