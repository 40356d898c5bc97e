"""``ivr-vault bootstrap``: keys, policies and AppRoles, idempotently, with an admin token."""

from __future__ import annotations

import argparse
from pathlib import Path

from service.errors import ConfigError
from service.settings import Settings


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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bootstrap", help="create keys, policies and AppRoles (idempotent)")
    p.add_argument("--credentials", action="append", default=[], metavar="ROLE=DIR",
                   help="write ROLE's role_id and secret_id into DIR (repeatable)")
    p.set_defaults(func=_bootstrap)
