"""``ivr-vault bootstrap``: keys, policies and AppRoles, idempotently, with an admin token;
and the account store's schema (``ivr-vault store migrate``) when STORE_URL or STORE_PATH
is set."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from service.errors import ConfigError
from service.settings import Settings

if TYPE_CHECKING:
    from service.vault.bootstrap import Layout
    from service.vault.client import VaultClient

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
    if args.backup_verify_key:
        from service.backup.signing import public_pem
        from service.files import write_private

        write_private(Path(args.backup_verify_key), public_pem(admin, layout.mount), mode=0o644)
        print(
            f"ivr-vault: wrote the backup signing key's public half to {args.backup_verify_key}: "
            "keep it beside the age identity backups are encrypted to (docs/backup.md)"
        )
    if args.jwt_service_account:
        _configure_jwt(args, admin, layout)
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


def _configure_jwt(args: argparse.Namespace, admin: VaultClient, layout: Layout) -> None:
    from service.vault.jwt_auth import JwtAuth, configure_jwt

    def read(path: str, flag: str) -> str:
        try:
            return Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise ConfigError(f"{flag}: cannot read {path}") from None

    accounts = dict(item.split("=", 1) for item in args.jwt_service_account)
    auth = JwtAuth(
        audience=args.jwt_audience,
        namespace=args.jwt_namespace,
        service_accounts=accounts,
        pubkeys=tuple(read(path, "--jwt-pubkey-file") for path in args.jwt_pubkey_file),
        discovery_url=args.jwt_discovery_url,
        discovery_ca_pem=read(args.jwt_discovery_ca, "--jwt-discovery-ca")
        if args.jwt_discovery_ca
        else "",
        bound_issuer=args.jwt_issuer,
        mount=args.jwt_mount,
    )
    configure_jwt(admin, layout, auth)
    print(
        f"ivr-vault: jwt auth at auth/{auth.mount}: "
        + ", ".join(f"{role}={auth.subject(role)}" for role in accounts)
    )


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
        "--backup-verify-key",
        metavar="FILE",
        help="write the public half of the key that signs backups (ivr-backup-sign) to "
        "FILE (PEM), for `restore` to verify them with",
    )
    p.add_argument(
        "--revoke-token",
        action="store_true",
        help="revoke VAULT_TOKEN when done (production: the root token)",
    )
    jwt = p.add_argument_group(
        "service-account login (Kubernetes; docs/kubernetes.md)",
        "with --jwt-service-account, configure the JWT auth method and one role per "
        "identity, bound to one service account and one audience",
    )
    jwt.add_argument(
        "--jwt-service-account",
        action="append",
        default=[],
        metavar="ROLE=NAME",
        help="ROLE (ivr-webhook) is the service account NAME in --jwt-namespace (repeatable)",
    )
    jwt.add_argument("--jwt-namespace", default="", metavar="NS")
    jwt.add_argument(
        "--jwt-audience",
        default="",
        metavar="AUD",
        help="the audience of the pods' projected tokens",
    )
    jwt.add_argument(
        "--jwt-pubkey-file",
        action="append",
        default=[],
        metavar="PEM",
        help="a public key that signs service-account tokens (repeatable)",
    )
    jwt.add_argument(
        "--jwt-discovery-url",
        default="",
        metavar="URL",
        help="instead of keys: the API server's issuer URL (OIDC discovery)",
    )
    jwt.add_argument(
        "--jwt-discovery-ca", default="", metavar="FILE", help="the CA of --jwt-discovery-url"
    )
    jwt.add_argument(
        "--jwt-issuer", default="", metavar="ISS", help="the tokens' issuer (bound_issuer)"
    )
    jwt.add_argument("--jwt-mount", default="jwt", metavar="PATH")
    p.set_defaults(func=_bootstrap, dev_identity="root")
