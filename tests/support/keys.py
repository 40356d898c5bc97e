"""Helpers for the key-lifecycle tests: a private OpenBao (rotation and retirement would
disturb the session Vault other tests share) and the CLI run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import hvac

from service.devtools.devstack import DevVault
from service.vault.bootstrap import RoleCredentials, bootstrap, issue_credentials
from service.vault.client import VaultClient
from tests.support.stack import ROLES


@dataclass
class PrivateVault:
    vault: DevVault
    admin: VaultClient
    credentials: dict[str, RoleCredentials]
    dir: Path

    @property
    def store_path(self) -> Path:
        return self.dir / "accounts.sqlite3"

    def cli_env(self, **extra: str) -> dict[str, str]:
        """The key-admin identity by *_FILE, as an operator would run it."""
        return {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.dir),
            "VAULT_ADDR": self.vault.addr,
            "LOG_FORMAT": "json",
            "VAULT_ROLE_ID_FILE": str(self.dir / "ivr-keyadmin" / "role_id"),
            "VAULT_SECRET_ID_FILE": str(self.dir / "ivr-keyadmin" / "secret_id"),
            "STORE_PATH": str(self.store_path),
            **extra,
        }

    def cli(
        self,
        *args: str,
        input: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service", *args],
            env=self.cli_env() if env is None else env,
            input=input,
            capture_output=True,
            text=True,
            cwd=cwd or self.dir,
            timeout=timeout,
            check=False,
        )

    def keyadmin_token(self) -> str:
        creds = self.credentials["ivr-keyadmin"]
        client = hvac.Client(url=self.vault.addr, timeout=10)
        auth = client.auth.approle.login(
            role_id=creds.role_id, secret_id=creds.secret_id, use_token=False
        )["auth"]
        return str(auth["client_token"])

    def key(self, name: str) -> dict[str, object]:
        data: dict[str, object] = self.admin.read(f"transit/keys/{name}", "read key")["data"]
        return data

    def bao(self, *args: str, token: str) -> subprocess.CompletedProcess[str]:
        """The vault/bao CLI, the token in the environment, never in argv."""
        binary = Path(sys.executable).with_name("bao")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.dir),
            "BAO_ADDR": self.vault.addr,
            "VAULT_ADDR": self.vault.addr,
            "BAO_TOKEN": token,
            "VAULT_TOKEN": token,
        }
        return subprocess.run(
            [str(binary), *args], env=env, capture_output=True, text=True, timeout=30, check=False
        )


@contextmanager
def private_vault(directory: Path, roles: Sequence[str] = ROLES) -> Iterator[PrivateVault]:
    """An OpenBao of the caller's own in ``directory/vault``, bootstrapped as ``make run``
    does, with AppRole credentials for ``roles`` (the key-admin's also written to
    ``directory/ivr-keyadmin`` for the CLI): for a module that pauses, seals, rotates or
    otherwise disturbs its Vault. Stopped at the end, resumed first if a test paused it."""
    vault = DevVault.start(directory / "vault")
    try:
        admin = VaultClient(vault.addr, vault.root_token, timeout=10)
        bootstrap(admin)
        credentials = issue_credentials(admin, roles)
        if "ivr-keyadmin" in credentials:
            credentials["ivr-keyadmin"].write(directory / "ivr-keyadmin")
        yield PrivateVault(vault, admin, credentials, directory)
    finally:
        if vault.process is not None and vault.process.poll() is None:
            vault.resume()
        vault.stop()
