"""``ivr-vault backup|restore``: Vault's Raft snapshot and the account store, as one file.

The runbook is docs/backup.md. ``backup`` runs as the ``ivr-backup`` identity (a
snapshot, nothing else); ``restore`` needs a token of the target Vault that may force a
snapshot in (root), and afterwards the unseal keys of the Vault the backup came from.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from service.cli.dev import DEV_DIR
from service.errors import BadInput, ConfigError
from service.settings import Secret, Settings

if TYPE_CHECKING:
    from service.devtools.devstack import DevVault
    from service.vault.operator_init import VaultServer


def _backup(args: argparse.Namespace, settings: Settings) -> int:
    from service.backup.archive import write_backup
    from service.vault.client import VaultClient, choose_credentials

    # In a make run directory with no VAULT_ADDR, .dev/ivr-backup/ (service/cli/devenv.py).
    creds = choose_credentials(settings)
    if creds is None:
        raise ConfigError(
            "VAULT_ROLE_ID/VAULT_SECRET_ID: not set (nor *_FILE, nor "
            "VAULT_TOKEN): no backup identity (in a make run directory, leave "
            "VAULT_ADDR unset to use .dev/ivr-backup/)"
        )
    out = Path(args.out) if args.out else default_out(time.time())
    if args.out is None:
        out.parent.mkdir(mode=0o700, exist_ok=True)
    elif out.is_dir():
        raise BadInput(f"--out: {out} is a directory; name the file to write")
    elif not out.parent.is_dir():
        raise BadInput(f"--out: no directory {out.parent}/ to write {out.name} into")
    vault = VaultClient.from_settings(
        settings, credentials=creds, pool_size=2, timeout=max(settings.vault_timeout, 30)
    )
    manifest = write_backup(vault, settings.store, out)
    print(
        f"ivr-vault: backup written to {out} (mode 0600): the Raft snapshot of Vault "
        f"cluster {manifest.cluster_id} and the account store {settings.store}. "
        "It opens only with that Vault's unseal keys: keep them, elsewhere."
    )
    return 0


# Where a backup goes without --out: a directory of its own, which git ignores, never the
# checkout's root (docs/backup.md).
BACKUP_DIR = Path("backups")


def default_out(now: float) -> Path:
    return BACKUP_DIR / time.strftime("ivr-backup-%Y%m%dT%H%M%SZ.tar.gz", time.gmtime(now))


def _restore(args: argparse.Namespace, settings: Settings) -> int:
    from service.backup.archive import read_backup, restore_snapshot, restore_store
    from service.vault.client import VaultClient
    from service.vault.operator_init import VaultServer

    _refuse_under_make_run(args, settings)
    backup = read_backup(Path(args.source))  # checked whole before anything is touched
    dev_vault = None
    verify: str | bool = True
    if args.dev:
        from service.devtools.devstack import DevVault

        dev_vault = DevVault.start(DEV_DIR)  # the Vault of `make run` (a new one if lost)
        addr, token = dev_vault.addr, dev_vault.root_token
    elif settings.vault_token is None:
        raise ConfigError(
            "VAULT_TOKEN: not set (restore needs a root token of the target "
            "Vault; with --dev, make run's own)"
        )
    else:
        # Through the first node listed: a snapshot is the cluster's, and the node that
        # takes it in must be the one that is unsealed with the backup's keys afterwards.
        addr, token = settings.vault_addr[0], settings.vault_token
        verify = settings.vault_cacert or True
    try:
        admin = VaultClient(addr, token, timeout=60, verify=verify)
        server = VaultServer(addr, verify=verify)
        try:
            if restore_snapshot(admin, server, backup):
                print(
                    "ivr-vault: Vault's data restored; it sealed itself: it now opens "
                    "with the unseal keys of the Vault the backup came from"
                )
                _unseal(server, args, dev_vault)
            else:
                print("ivr-vault: Vault's data restored (same cluster; still unsealed)")
        finally:
            server.close()
            admin.close()
    finally:
        if dev_vault is not None:
            dev_vault.stop()
    aside = restore_store(backup, settings.store)
    print(
        f"ivr-vault: account store restored to {settings.store}"
        + (f" (the one it replaced is in {aside})" if aside else "")
    )
    print("ivr-vault: restore complete; start (or restart) the services")
    return 0


def _refuse_under_make_run(args: argparse.Namespace, settings: Settings) -> None:
    """``make run`` holds the dev Vault's data and the store: a restore into them while
    it runs would fail halfway (its Vault holds the data directory) or be undone."""
    from service.devtools.launcher import running_pid

    dev_store = settings.store.engine == "sqlite" and Path(
        settings.store.path
    ).resolve().is_relative_to(DEV_DIR.resolve())
    pid = running_pid(DEV_DIR) if args.dev or dev_store else None
    if pid is not None:
        raise BadInput(
            f"make run is running in this directory (pid {pid}) and holds "
            f"{DEV_DIR}/: stop it (Ctrl-C) first, then restore"
        )


def _unseal(
    server: VaultServer,
    args: argparse.Namespace,
    dev_vault: DevVault | None,
) -> None:
    from service.vault.operator_init import DevKeyring

    if dev_vault is not None:
        dev_vault.unseal()  # its keyring keeps the keys of every Vault made in .dev/
        print(f"ivr-vault: unsealed with the keys kept in {dev_vault.keyring.path}")
        return
    if args.unseal_keys_file:
        keyring = DevKeyring(Path(args.unseal_keys_file))
        if not any(server.try_unseal(keys.unseal_keys) for keys in keyring.read()):
            raise BadInput("--unseal-keys-file: none of its keys opens this Vault")
    elif sys.stdin.isatty():
        needed = int(server.seal_status()["t"])
        shares = [
            Secret(getpass.getpass(f"unseal key share {i + 1} of {needed}: "))
            for i in range(needed)
        ]
        if not server.try_unseal(shares):
            raise BadInput("unseal: these shares do not open this Vault")
    else:
        print(
            "ivr-vault: unseal it now with those keys (bao operator unseal), then "
            "start the services"
        )
        return
    server.wait_active()
    print("ivr-vault: unsealed")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "backup", help="write Vault's Raft snapshot and the account store into one file (mode 0600)"
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="where to write it (default: backups/ivr-backup-<UTC time>.tar.gz)",
    )
    p.set_defaults(func=_backup, dev_identity="ivr-backup")
    p = sub.add_parser(
        "restore",
        help="bring back Vault's data and the account store from a backup (docs/backup.md)",
    )
    p.add_argument("--from", dest="source", required=True, metavar="FILE")
    p.add_argument(
        "--dev",
        action="store_true",
        help="into make run's Vault in .dev/ (started for the restore; stop make run first)",
    )
    p.add_argument(
        "--unseal-keys-file",
        metavar="FILE",
        help="after the restore, unseal with the keys in FILE (the format of "
        ".dev/vault-keys.dev-only; development only: production unseal "
        "keys are typed at the prompt)",
    )
    p.set_defaults(func=_restore)
