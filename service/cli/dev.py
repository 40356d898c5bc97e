"""``ivr-vault dev`` (``make run``): a dev Vault, bootstrapped, with backend and webhook;
``--ha`` (``make run-ha``): the same past one machine (service/devtools/ha.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from service.settings import Settings

# Where ``make run`` keeps its state; ``ivr-vault call`` finds the dev Twilio token here.
DEV_DIR = Path(".dev")


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    from service.cli.devenv import unsourced

    # A shell that sourced .dev/vault.env still names the last make run's Vault: start that
    # one again, at the same address (its port), so that the shell's address stays right.
    environ, dropped = unsourced(os.environ)
    if dropped:
        port = urlsplit(os.environ.get("VAULT_ADDR") or os.environ["BAO_ADDR"]).port
        if not args.ha and port and not environ.get("DEV_VAULT_PORT"):
            environ["DEV_VAULT_PORT"] = str(port)
        print(f"ivr-vault: {dropped}", file=sys.stderr, flush=True)
    if args.ha:
        from service.devtools.ha import run_ha

        return run_ha(settings, environ, state_dir=DEV_DIR)
    from service.devtools.launcher import run_dev

    return run_dev(settings, environ, state_dir=DEV_DIR)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dev", help="start a dev Vault, bootstrap it, run backend and webhook")
    p.add_argument(
        "--ha",
        action="store_true",
        help="make run-ha: a 3-node Vault cluster, 2 backends, 2 webhooks behind "
        "Caddy, a shared store (state in .dev/ha/)",
    )
    p.set_defaults(func=_dev)
