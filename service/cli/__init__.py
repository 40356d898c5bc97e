"""The ``ivr-vault`` command line (also ``python -m service``).

Secrets never come from argv: the PIN and card digits from a prompt or stdin, tokens
and credentials from the environment or ``*_FILE``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from service.errors import ConfigError, IvrVaultError
from service.settings import Settings

Command = Callable[[argparse.Namespace, Settings], int]

# One module per command group. Each exposes
# ``register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None`` and sets
# ``func`` (a :data:`Command`) on its parsers. Imported when the parser is built, so that a
# command pulls in only what it runs.
REGISTRARS: tuple[str, ...] = tuple(f"service.cli.{name}" for name in (
    "dev", "serve", "bootstrap", "call", "accounts", "keys", "legacy", "twilio", "backup",
    "operator", "store"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ivr-vault", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in REGISTRARS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from service.logs.config import configure_logging

    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_environ()
        console = args.command == "dev" or settings.log_format == "console"
        # A service joins the lines of one event-loop iteration into one write, off the
        # request path; a CLI command (and what it prints around its log lines) stays in
        # order, one write per line.
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
