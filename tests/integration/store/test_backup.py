"""``ivr-vault backup`` and ``restore`` with real processes: provision, back up, destroy
Vault's data, restore, and the account is served by a real call.

Two ways in: ``make run``'s own Vault (``restore --dev``: its data directory deleted, the
launcher refusing the store, then restored), and a Vault rebuilt as a new cluster, as in
production (``VAULT_ADDR``/``VAULT_TOKEN`` of the new one; afterwards it opens only with
the old unseal keys, given here by ``--unseal-keys-file``).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from service.backup.archive import RESTORE_PATH
from service.devtools.devstack import DevVault
from service.errors import VaultPermissionDenied
from service.settings import Secret
from service.vault.bootstrap import Layout, issue_credentials
from service.vault.client import AppRoleCredentials, VaultClient
from tests.support.backups import OperatorKeys, opened
from tests.support.demo import FOUND
from tests.support.devrun import (
    ADDED_NUMBER,
    ADDED_STDIN,
    READY_LINE,
    DevRun,
    call,
    ctrl_c,
    ivr_vault,
    vault_env,
)
from tests.support.keys import private_vault
from tests.support.repo import ROOT
from tests.support.stack import ROLES, Stack, make_stack

ADDED = "Thank you. Your account number is AC55556666 and your balance is 7.00"


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_make_run_backup_lose_vault_restore_served(start_dev: Callable[..., DevRun]) -> None:
    run = start_dev()
    run.wait_for(READY_LINE)
    added = ivr_vault(
        run,
        "accounts",
        "add",
        "--account",
        "AC55556666",
        "--balance",
        "7.00",
        stdin=ADDED_STDIN,
        **vault_env(run),
    )
    assert added.returncode == 0, added.stderr
    # The operator's age key pair (outside .dev/, beside it the signing key's public half,
    # exported by bootstrap with make run's root token).
    keys = run.cwd / "operator"
    keys.mkdir(mode=0o700)
    recipient = ivr_vault(run, "backup-identity", str(keys / "identity.txt"))
    assert recipient.returncode == 0, recipient.stderr
    exported = ivr_vault(
        run, "bootstrap", "--backup-verify-key", str(keys / "ivr-backup-verify.pem")
    )
    assert exported.returncode == 0, exported.stderr
    # The backup identity is .dev/ivr-backup's AppRole: no token in its environment, and
    # no VAULT_ADDR (.dev/vault.env says where make run's Vault is).
    # Without --out: into backups/ (mode 0700, ignored by git), never the checkout's root.
    made = ivr_vault(run, "backup", BACKUP_RECIPIENTS=recipient.stdout.strip())
    assert made.returncode == 0, made.stderr
    assert "as ivr-backup (.dev/ivr-backup/)" in made.stderr
    (backup,) = (run.cwd / "backups").iterdir()
    assert re.fullmatch(r"ivr-backup-[0-9]{8}T[0-9]{6}Z\.tar\.gz\.age", backup.name)
    assert f"backup written to backups/{backup.name} " in made.stdout
    assert stat.S_IMODE((run.cwd / "backups").stat().st_mode) == 0o700
    assert "backups/" in (ROOT / ".gitignore").read_text().split()
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    with opened(backup, keys / "identity.txt") as content:
        assert content.sealed
        inside = content.snapshot.read_bytes() + content.store.read_bytes()
    keyring = (run.state / "vault-keys.dev-only").read_text()
    for line in keyring.splitlines():  # never an unseal key or a token inside
        if "=" in line and not line.startswith("#"):
            secret = line.split("=", 1)[1].encode()
            assert secret not in inside
    # While make run holds .dev/, restore refuses before touching anything, naming it.
    unlock = ("--identity", str(keys / "identity.txt"))
    early = ivr_vault(run, "restore", "--from", str(backup), "--dev", *unlock)
    assert (early.returncode, early.stderr.splitlines()[-1]) == (
        2,
        f"ivr-vault: bad input: make run is running in this directory (pid "
        f"{run.process.pid}) and holds .dev/: stop it (Ctrl-C) first, then restore",
    )
    assert ctrl_c(run) == 0

    shutil.rmtree(run.state / "vault-data")  # Vault's data is lost
    refused = start_dev()
    assert refused.process.wait(timeout=60) == 1
    assert "ivr-vault: the backend is not ready: ivr-lookup" in refused.output()

    restored = ivr_vault(run, "restore", "--from", str(backup), "--dev", *unlock)
    assert restored.returncode == 0, restored.stderr + restored.stdout
    assert "it sealed itself" in restored.stdout
    assert "account store restored to .dev/accounts.sqlite3" in restored.stdout

    again = start_dev()
    again.wait_for(READY_LINE)
    assert "already in the store; not seeded again" in again.output()
    assert call(again, "7351", card="5555", number=ADDED_NUMBER).stdout.splitlines()[-1] == ADDED
    assert call(again, "4321").stdout.splitlines()[-1] == FOUND
    assert ctrl_c(again) == 0


def test_restore_into_a_new_cluster_opens_with_the_old_keys(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The production path: the old Vault is gone, a new one is initialised (its own keys,
    its own root token), the snapshot is forced in, and the Vault it becomes is the old one:
    sealed by the old keys, with the old AppRoles, so the old credentials work again."""
    home = tmp_path_factory.mktemp("restore")
    with private_vault(home, [*ROLES, "ivr-backup"]) as pv:
        old, creds = pv.vault, pv.credentials
        stack = make_stack(old, creds, home / "stack", start=False)  # seeds the demo account
        backup_role = creds["ivr-backup"]
        keys = OperatorKeys.make(home / "operator", pv.admin)
        backup = home / "backup.tar.gz.age"
        made = cli(
            "backup",
            "--out",
            str(backup),
            "--recipient",
            keys.recipient,
            cwd=home,
            env={
                "VAULT_ADDR": old.addr,
                "VAULT_ROLE_ID": backup_role.role_id,
                "VAULT_SECRET_ID": backup_role.secret_id,
                "STORE_PATH": str(stack.store_path),
            },
        )
        assert made.returncode == 0, made.stderr
        # The backup identity may take snapshots, not force one in.
        backup_vault = VaultClient(
            old.addr,
            AppRoleCredentials(Secret(backup_role.role_id), Secret(backup_role.secret_id)),
            timeout=10,
        )
        with opened(backup, keys.identity) as content, pytest.raises(VaultPermissionDenied):
            backup_vault.upload(RESTORE_PATH, "restore", content.snapshot.read_bytes())
        with pytest.raises(VaultPermissionDenied):
            backup_vault.write("transit/hmac/ivr-lookup", "hmac", {"input": "YQ=="})
    shutil.rmtree(home / "vault" / "vault-data")  # the data is lost; its keys are not
    for path in home.glob("stack/accounts.sqlite3*"):  # and the store with it
        path.unlink()

    new = DevVault.start(home / "new-vault", port=old.port)  # a new cluster, same address
    try:
        restored = cli(
            "restore",
            "--from",
            str(backup),
            "--identity",
            str(keys.identity),
            "--unseal-keys-file",
            str(old.keyring.path),
            cwd=home,
            env={**new.env(), "STORE_PATH": str(stack.store_path)},
        )
        assert restored.returncode == 0, restored.stderr + restored.stdout
        assert "it sealed itself" in restored.stdout and "ivr-vault: unsealed" in restored.stdout
        # Its own root token went with its own data; the old Vault's is back.
        assert VaultClient(new.addr, old.root_token, timeout=5).read(
            "auth/token/lookup-self", "lookup"
        )["data"]
        assert not VaultClient(new.addr, new.root_token, timeout=5).health()["sealed"]
        # Restored into its own cluster (the same backup again): it stays unsealed.
        same = cli(
            "restore",
            "--from",
            str(backup),
            "--identity",
            str(keys.identity),
            cwd=home,
            env={
                "VAULT_ADDR": new.addr,
                "VAULT_TOKEN": old.root_token.reveal(),
                "STORE_PATH": str(stack.store_path),
            },
        )
        assert same.returncode == 0, same.stderr
        assert "same cluster; still unsealed" in same.stdout

        # The old credentials log in again (their AppRoles came back with the data), the
        # store's canary matches, and the account is served.
        stack.backend.start()
        stack.webhook.start()
        try:
            heard = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "service",
                    "call",
                    "--card",
                    "1234",
                    "--pin",
                    "4321",
                    "--url",
                    stack.webhook.url,
                ],
                cwd=home,
                capture_output=True,
                text=True,
                env={
                    "PATH": os.environ.get("PATH", ""),
                    "HOME": str(home),
                    "TWILIO_AUTH_TOKEN": stack.twilio_token,
                },
                timeout=60,
                check=False,
            )
            assert heard.stdout.splitlines()[-1] == FOUND, heard.stdout + heard.stderr
        finally:
            stack.stop()
    finally:
        new.stop()


def test_a_planted_link_never_receives_the_backup(
    dev_vault: DevVault, admin: VaultClient, layout: Layout, stack: Stack, tmp_path: Path
) -> None:
    """The review's attack (docs/security.md, "private files through links"): ``ln -s victim.txt
    bk/out.tgz.partial`` made
    ``backup --out bk/out.tgz`` write the whole backup into ``victim.txt``. Links planted
    at the old temporary name and at the output itself are left alone now; the backup is
    a new 0600 file of its own."""
    role = issue_credentials(admin, ["ivr-backup"], approle_mount=layout.approle_mount)
    bk = tmp_path / "bk"
    bk.mkdir()
    victims = {name: tmp_path / name for name in ("victim.txt", "other.txt")}
    for victim in victims.values():
        victim.write_text("the victim's own words\n")
    (bk / "out.tgz.partial").symlink_to(victims["victim.txt"])
    (bk / "out.tgz").symlink_to(victims["other.txt"])
    keys = OperatorKeys.make(tmp_path / "operator", admin)
    made = cli(
        "backup",
        "--out",
        str(bk / "out.tgz"),
        "--recipient",
        keys.recipient,
        cwd=tmp_path,
        env={
            "VAULT_ADDR": dev_vault.addr,
            "VAULT_ROLE_ID": role["ivr-backup"].role_id,
            "VAULT_SECRET_ID": role["ivr-backup"].secret_id,
            "STORE_PATH": str(stack.store_path),
        },
    )
    assert made.returncode == 0, made.stderr
    for victim in victims.values():
        assert victim.read_bytes() == b"the victim's own words\n"
    out = bk / "out.tgz"
    assert not out.is_symlink() and stat.S_IMODE(out.lstat().st_mode) == 0o600
    with opened(out, keys.identity) as content:  # a whole backup, where it was asked for
        assert content.store.stat().st_size
    assert sorted(p.name for p in bk.iterdir()) == ["out.tgz", "out.tgz.partial"]
