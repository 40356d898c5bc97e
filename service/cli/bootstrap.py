"""``ivr-vault bootstrap``: keys, policies and AppRoles, idempotently, with an admin token;
and the account store's schema (``ivr-vault store migrate``) when STORE_URL or STORE_PATH
is set."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from service.errors import ConfigError
from service.settings import Settings

# Bootstrap also migrates the account store when one is configured (never the default
# file in whatever directory it runs in).
STORE_SETTINGS = frozenset({"STORE_URL", "STORE_URL_FILE", "STORE_PATH"})


def _bootstrap(args: argparse.Namespace, settings: Settings) -> int:
    from service.vault.bootstrap import (
        Layout,
        bootstrap,
        current_credentials,
        issue_credentials,
        revoke_token,
    )
    from service.vault.client import VaultClient

    if settings.vault_token is None:
        raise ConfigError("VAULT_TOKEN: not set (bootstrap needs an administrative token)")
    cidrs = [c.strip() for c in args.bound_cidrs.split(",") if c.strip()]
    layout = Layout.load(profile=args.profile, bound_cidrs=cidrs)
    admin = VaultClient.from_settings(
        settings, credentials=settings.vault_token, timeout=max(settings.vault_timeout, 10)
    )
    bootstrap(admin, layout)
    targets = dict(item.split("=", 1) for item in args.credentials)
    for role, target in targets.items():
        kept = (
            None
            if args.rotate
            else current_credentials(admin, role, Path(target), approle_mount=layout.approle_mount)
        )
        if kept is not None:
            print(f"ivr-vault: {role} credentials in {target} are valid; kept")
            continue
        issue_credentials(admin, [role], approle_mount=layout.approle_mount)[role].write(
            Path(target)
        )
        print(f"ivr-vault: wrote {role} credentials to {target} (older secret-ids destroyed)")
    if args.revoke_token:
        revoke_token(admin)
        print("ivr-vault: bootstrap token revoked")
    if STORE_SETTINGS & set(os.environ):
        from service.store.migrations import migrate_store

        print(f"ivr-vault: {migrate_store(settings.store)}")
    print("ivr-vault: bootstrap complete")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bootstrap", help="create keys, policies and AppRoles (idempotent)")
    p.add_argument(
        "--credentials",
        action="append",
        default=[],
        metavar="ROLE=DIR",
        help="write ROLE's role_id and secret_id into DIR (repeatable); "
        "credentials already there are kept while Vault accepts them and "
        "a third of their life is left",
    )
    p.add_argument(
        "--rotate",
        action="store_true",
        help="issue new secret-ids for --credentials even when the old ones are "
        "valid (they are destroyed: restart the services)",
    )
    p.add_argument(
        "--profile", choices=["prod"], help="role settings for production (vault/layout.json)"
    )
    p.add_argument(
        "--bound-cidrs",
        default="",
        metavar="CIDR[,CIDR]",
        help="with --profile: the addresses the services' AppRoles may be used "
        "from (token_bound_cidrs, secret_id_bound_cidrs)",
    )
    p.add_argument(
        "--revoke-token",
        action="store_true",
        help="revoke VAULT_TOKEN when done (production: the root token)",
    )
    p.set_defaults(func=_bootstrap, dev_identity="root")
