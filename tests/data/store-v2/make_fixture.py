"""How tests/data/store-v2/ was made, with the release before issue 19 (main at 4233846,
store schema version 2): kept for the record; it cannot run against a newer release.

A fresh OpenBao, bootstrapped; the demo account (AC12345678, card 1234, PIN 4321) and one
account added by the CLI (AC55500011, card 5678, PIN 7351, balance 99.10); then
``ivr-vault backup`` as the ivr-backup identity. Kept: the backup tarball and the Vault's
dev-only keyring (its unseal keys and root token: a throw-away test Vault).

    .venv/bin/python tests/data/store-v2/make_fixture.py tests/data/store-v2
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from service.devtools.devstack import DevVault
from service.vault.bootstrap import bootstrap, issue_credentials
from service.vault.client import VaultClient
from tests.support.stack import ROLES, make_stack


def main(out: Path) -> None:
    home = Path(tempfile.mkdtemp())
    vault = DevVault.start(home / "vault")
    try:
        admin = VaultClient(vault.addr, vault.root_token, timeout=10)
        bootstrap(admin)
        creds = issue_credentials(admin, [*ROLES, "ivr-backup"])
        stack = make_stack(vault, creds, home / "stack", start=False)  # seeds the demo
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "VAULT_ADDR": vault.addr,
            "STORE_PATH": str(stack.store_path),
        }
        backend = creds["ivr-backend"]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "service",
                "accounts",
                "add",
                "--account",
                "AC55500011",
                "--balance",
                "99.10",
            ],
            input="5678\n7351\n",
            text=True,
            env={**env, "VAULT_ROLE_ID": backend.role_id, "VAULT_SECRET_ID": backend.secret_id},
            check=True,
        )
        role = creds["ivr-backup"]
        subprocess.run(
            [sys.executable, "-m", "service", "backup", "--out", str(out / "backup.tar.gz")],
            text=True,
            env={**env, "VAULT_ROLE_ID": role.role_id, "VAULT_SECRET_ID": role.secret_id},
            check=True,
        )
        shutil.copy(vault.keyring.path, out / "vault-keys.dev-only")
    finally:
        vault.stop()
        shutil.rmtree(home)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
