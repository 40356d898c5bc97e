"""``ivr-vault backup|restore``: Vault's Raft snapshot and the account store, as one file,
encrypted to the operators' age public keys and signed by the backup identity.

The runbook is docs/backup.md. ``backup`` runs as the ``ivr-backup`` identity (a snapshot
and a signature, nothing else); ``restore`` needs the age identity the backup was
encrypted to, the signing key's public half, a token of the target Vault that may force a
snapshot in (root), and afterwards the unseal keys of the Vault the backup came from.
``backup-identity`` makes an operator's age key pair when the age tool is not at hand.
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
    from service.backup.archive import Backup, Unlock
    from service.devtools.devstack import DevVault
    from service.vault.operator_init import VaultServer


def _backup(args: argparse.Namespace, settings: Settings) -> int:
    from service.backup.archive import write_backup
    from service.backup.sealed import recipients
    from service.vault.client import VaultClient, choose_credentials

    keys = [*settings.backup_recipients, *args.recipient]
    if not keys:
        raise BadInput(
            "--recipient: no age public key (nor BACKUP_RECIPIENTS): a backup is "
            "encrypted to its operators' keys (docs/backup.md)"
        )
    to = recipients(keys, "--recipient/BACKUP_RECIPIENTS")

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
    elif out.resolve().is_relative_to(DEV_DIR.resolve()):
        # .dev/ holds the dev Vault's unseal keys: a backup beside them would carry, to
        # wherever it is copied, what opens its snapshot.
        raise BadInput(
            f"--out: not in {DEV_DIR}/, which holds the dev Vault's unseal keys; "
            "keep backups apart from them"
        )
    vault = VaultClient.from_settings(
        settings, credentials=creds, pool_size=2, timeout=max(settings.vault_timeout, 30)
    )
    manifest = write_backup(vault, settings.store, out, to, settings.transit_mount)
    print(
        f"ivr-vault: backup written to {out} (mode 0600): the Raft snapshot of Vault "
        f"cluster {manifest.cluster_id} and the account store {settings.store}, "
        f"encrypted to {len(to)} age recipient(s) and signed by the backup identity. "
        "Its snapshot opens only with that Vault's unseal keys: keep them, elsewhere."
    )
    return 0


def _backup_identity(args: argparse.Namespace, settings: Settings) -> int:
    """Make an age identity in FILE (mode 0600) unless one is there; print its public key."""
    from pyrage import x25519

    from service.backup.sealed import read_identities
    from service.files import private_writer

    path = Path(args.file)
    if not path.exists():
        made = x25519.Identity.generate()
        with private_writer(path) as out:
            out.write(f"# public key: {made.to_public()}\n{made}\n".encode())
        print(f"ivr-vault: wrote a new age identity to {path} (mode 0600)", file=sys.stderr)
    for identity in read_identities(path):
        print(identity.to_public())
    return 0


# Where a backup goes without --out: a directory of its own, which git ignores, never the
# checkout's root (docs/backup.md).
BACKUP_DIR = Path("backups")


def default_out(now: float) -> Path:
    return BACKUP_DIR / time.strftime("ivr-backup-%Y%m%dT%H%M%SZ.tar.gz.age", time.gmtime(now))


def _unlock(args: argparse.Namespace) -> Unlock:
    """The age identity and the signing key's public half, read before anything else
    (restore's default --verify-key: the file beside the identity)."""
    from service.backup.archive import Unlock
    from service.backup.sealed import read_identities
    from service.backup.signing import VERIFY_KEY_NAME, read_verify_keys

    if args.identity is None:
        return Unlock(None, None)
    identity = Path(args.identity)
    verify = Path(args.verify_key) if args.verify_key else identity.parent / VERIFY_KEY_NAME
    return Unlock(read_identities(identity), read_verify_keys(verify), identity, verify)


def _restore(args: argparse.Namespace, settings: Settings) -> int:
    from service.backup.archive import open_backup

    _refuse_under_make_run(args, settings)
    source = Path(args.source)
    # Checked whole (decrypted, signature, digests) before anything is touched.
    with open_backup(source, _unlock(args), allow_unsealed=args.allow_unsealed) as backup:
        made = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(backup.manifest.created))
        if backup.sealed:
            # A genuine older backup verifies too: the time shows which one this is.
            print(
                f"ivr-vault: {source}: made {made} from Vault cluster "
                f"{backup.manifest.cluster_id}; decrypted, its signature and every member "
                "checked"
            )
        else:
            print(
                f"ivr-vault: warning: {source} is a plain backup (from before backups were "
                "sealed): neither encrypted nor signed, nothing proves who made it; "
                "restoring it as --allow-unsealed asks",
                file=sys.stderr,
            )
        return _restore_checked(args, settings, backup)


def _restore_checked(args: argparse.Namespace, settings: Settings, backup: Backup) -> int:
    from service.backup.archive import restore_snapshot, restore_store
    from service.vault.client import VaultClient
    from service.vault.operator_init import VaultServer

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
        help="where to write it (default: backups/ivr-backup-<UTC time>.tar.gz.age)",
    )
    p.add_argument(
        "--recipient",
        action="append",
        default=[],
        metavar="AGE_PUBLIC_KEY",
        help="encrypt to this age public key (age1…; repeatable), besides BACKUP_RECIPIENTS",
    )
    p.set_defaults(func=_backup, dev_identity="ivr-backup")
    p = sub.add_parser(
        "backup-identity",
        help="make an age identity (key pair) in FILE unless one is there; print its "
        "public key, for backup --recipient",
    )
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=_backup_identity)
    p = sub.add_parser(
        "restore",
        help="bring back Vault's data and the account store from a backup (docs/backup.md)",
    )
    p.add_argument("--from", dest="source", required=True, metavar="FILE")
    p.add_argument(
        "--identity",
        metavar="FILE",
        help="the age identity the backup was encrypted to (AGE-SECRET-KEY-1…)",
    )
    p.add_argument(
        "--verify-key",
        metavar="FILE",
        help="the backup signing key's public half (PEM, from `bootstrap "
        "--backup-verify-key`; default: ivr-backup-verify.pem beside --identity)",
    )
    p.add_argument(
        "--allow-unsealed",
        action="store_true",
        help="restore a plain backup from before backups were sealed (neither encrypted "
        "nor signed), with a warning",
    )
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
