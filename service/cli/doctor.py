"""``ivr-vault doctor [--json]``: is this deployment sound? Exit 0 only when every check
passes (reminders never fail). See service/doctor/ and docs/operations.md#doctor."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from service.cli.dev import DEV_DIR
from service.cli.devenv import cannot_tell, read_cluster
from service.errors import BadInput
from service.settings import Settings


def _doctor(args: argparse.Namespace, settings: Settings) -> int:
    from service.doctor.identities import IDENTITIES, OPTIONAL_IDENTITIES
    from service.doctor.run import Options, run_doctor

    dev = getattr(args, "dev_env", None)
    dev_dirs = {}
    if dev is not None:
        dev_dirs = {
            role: found
            for role in (*IDENTITIES, *OPTIONAL_IDENTITIES)
            if (found := dev.approle_dir(role)) is not None
        }
    given = {}
    for item in args.credentials:
        role, _, directory = item.partition("=")
        roles = (*IDENTITIES, *OPTIONAL_IDENTITIES)
        if role not in roles or not directory:
            raise BadInput(f"--credentials: expected ROLE=DIR with ROLE one of {', '.join(roles)}")
        given[role] = Path(directory)
    webhook_url, unknown = args.webhook_url, None
    named = (
        args.webhook_url
        or args.backend_url
        or any(os.environ.get(name) for name in ("BACKEND_URL", "WEBHOOK_HOST", "WEBHOOK_PORT"))
    )
    if not named:  # the stack running in this directory, not whatever has the default ports
        cluster = read_cluster()
        if cluster is not None:
            webhook_url = next(iter(cluster.get("webhook", [])), None)
            if cluster.get("backend"):
                settings = dataclasses.replace(settings, backend_url=tuple(cluster["backend"]))
        elif DEV_DIR.is_dir():
            unknown = cannot_tell("stack")
    options = Options(
        getattr(args, "settings_error", None),
        given,
        dev_dirs,
        webhook_url,
        args.backend_url,
        unknown,
    )
    result = run_doctor(settings, options)
    print(result.as_json() if args.json else result.table())
    return 0 if result.ok else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "doctor",
        help="check settings, Vault, identities, keys, store, "
        "services and the public URL; exit 0 when all pass",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--credentials",
        action="append",
        default=[],
        metavar="ROLE=DIR",
        help="an identity's role_id and secret_id files (repeatable; default: "
        "make run's .dev/ROLE/, or the environment's AppRole)",
    )
    p.add_argument(
        "--webhook-url",
        metavar="URL",
        help="the webhook's own address (default: make run's, from "
        ".dev/cluster.json; else WEBHOOK_HOST:WEBHOOK_PORT)",
    )
    p.add_argument(
        "--backend-url",
        metavar="URL",
        help="the backend (default: make run's, from .dev/cluster.json; else BACKEND_URL)",
    )
    p.set_defaults(func=_doctor, dev_identity="any", reports_settings=True)
