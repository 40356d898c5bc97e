"""``ivr-vault operator unseal|tls``: the steps docker compose runs around its Vault.

``unseal`` (dev compose's ``vault-unseal`` service) initialises the Vault the first time
and unseals it on every start, with keys kept in a dev-only file
(:mod:`service.vault.operator_init`, the same code as ``make run``). ``tls``
(``docker-compose.prod.yml``'s ``vault-tls``) makes a private CA and Vault's server
certificate, unless the operator supplied them (:mod:`service.vault.tls`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from service.settings import Settings


def _unseal(args: argparse.Namespace, settings: Settings) -> int:
    from service.vault.operator_init import DevKeyring, VaultServer, keep_unsealed

    # Every node of VAULT_ADDR: a cluster's first node is initialised, the others join.
    servers = [
        VaultServer(addr, verify=settings.vault_cacert or True) for addr in settings.vault_addr
    ]
    try:
        keep_unsealed(
            servers,
            DevKeyring(Path(args.keys_file)),
            initialise_if_new=args.init,
            token_file=Path(args.token_file) if args.token_file else None,
            interval=args.watch,
        )
    finally:
        for server in servers:
            server.close()
    return 0


def _tls(args: argparse.Namespace, settings: Settings) -> int:
    from service.vault.tls import ensure_server_certificate

    said = ensure_server_certificate(
        Path(args.dir), Path(args.key_dir), Path(args.ca_dir), names=args.name
    )
    print(f"ivr-vault: {said}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    operator = sub.add_parser(
        "operator", help="steps around docker compose's Vault"
    ).add_subparsers(dest="operator_command", required=True)
    p = operator.add_parser(
        "unseal",
        help="(dev only) initialise when new and unseal "
        "every node of VAULT_ADDR with the keys in "
        "--keys-file",
    )
    p.add_argument(
        "--keys-file",
        required=True,
        metavar="FILE",
        help="the dev keyring (written, mode 0600, when --init initialises)",
    )
    p.add_argument("--init", action="store_true", help="initialise a new Vault (1 share)")
    p.add_argument(
        "--token-file",
        metavar="FILE",
        help="write the root token here (mode 0600) for the init step",
    )
    p.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="keep running; unseal again whenever Vault restarts sealed",
    )
    p.set_defaults(func=_unseal)
    p = operator.add_parser(
        "tls", help="a private CA and Vault's server certificate, unless present"
    )
    p.add_argument("--dir", required=True, help="ca.crt and server.crt (public)")
    p.add_argument(
        "--key-dir", required=True, help="server.key (mode 0640: Vault reads it through group_add)"
    )
    p.add_argument("--ca-dir", required=True, help="ca.key (mode 0600)")
    p.add_argument(
        "--name",
        action="append",
        required=True,
        help="a DNS name or IP address of the server (repeatable)",
    )
    p.set_defaults(func=_tls)
