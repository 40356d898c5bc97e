"""``ivr-vault dev`` (``make run``): a dev Vault, bootstrapped, with backend and webhook;
``--ha`` (``make run-ha``): the same past one machine (service/devtools/ha.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from service.settings import Settings

# Where ``make run`` keeps its state; ``ivr-vault call`` finds the dev Twilio token here.
DEV_DIR = Path(".dev")
# Written there by ``make run`` and ``make run-ha``: every process with its role, name, pid
# and URL; read by ``doctor`` and ``call`` to find the stack running in this directory.
CLUSTER_JSON = "cluster.json"


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    if args.ha:
        from service.devtools.ha import run_ha

        return run_ha(settings, os.environ, state_dir=DEV_DIR)
    from service.devtools.launcher import run_dev

    return run_dev(settings, os.environ, state_dir=DEV_DIR)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dev", help="start a dev Vault, bootstrap it, run backend and webhook")
    p.add_argument("--ha", action="store_true",
                   help="make run-ha: a 3-node Vault cluster, 2 backends, 2 webhooks behind "
                        "Caddy, a shared store (state in .dev/ha/)")
    p.set_defaults(func=_dev)
