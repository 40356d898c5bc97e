"""Bootstrap on the session's real Vault: idempotent, keys as the layout says, and a
pre-existing key with the wrong settings refused rather than papered over."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.devtools.devstack import DevVault
from service.errors import ConfigError
from service.vault.bootstrap import Layout, bootstrap
from service.vault.client import VaultClient


def key(admin: VaultClient, name: str) -> dict[str, object]:
    data: dict[str, object] = admin.read(f"transit/keys/{name}", "read key")["data"]
    return data


def test_keys_are_as_the_layout_says(admin: VaultClient, layout: Layout) -> None:
    dtmf = key(admin, "ivr-dtmf")
    assert dtmf["type"] == "aes256-gcm96"
    assert dtmf["derived"] is True
    assert dtmf["exportable"] is False
    assert dtmf["allow_plaintext_backup"] is False
    assert dtmf["deletion_allowed"] is False
    assert dtmf["auto_rotate_period"] == 720 * 3600
    lookup = key(admin, "ivr-lookup")
    assert lookup["type"] == "hmac"
    assert lookup["exportable"] is False


def test_bootstrap_twice_changes_nothing(admin: VaultClient, layout: Layout) -> None:
    def snapshot() -> tuple[object, ...]:
        roles = {name: admin.read(f"auth/approle/role/{name}", "read role")["data"]
                 for name in layout.roles}
        policies = {name: admin.read(f"sys/policies/acl/{name}", "read policy")["data"]
                    ["policy"] for name in layout.policies}
        return (key(admin, "ivr-dtmf")["latest_version"],
                key(admin, "ivr-lookup")["latest_version"], roles, policies,
                sorted(admin.read("sys/mounts", "mounts")["data"]))

    before = snapshot()
    bootstrap(admin)
    bootstrap(admin)
    assert snapshot() == before
    assert set(layout.policies) == {"ivr-webhook", "ivr-backend", "ivr-keyadmin"}


def test_cli_bootstrap_is_idempotent_and_writes_credentials(dev_vault: DevVault,
                                                            tmp_path: Path) -> None:
    # The admin token travels by environment, never argv.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **dev_vault.env()}
    command = [sys.executable, "-m", "service", "bootstrap",
               "--credentials", f"ivr-webhook={tmp_path / 'webhook'}"]
    for _ in range(2):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 0, done.stderr
        assert "bootstrap complete" in done.stdout
    assert (tmp_path / "webhook" / "role_id").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "webhook" / "secret_id").read_text().strip()
    assert dev_vault.root_token.reveal() not in done.stdout + done.stderr


@pytest.mark.parametrize(("name", "create"), [
    ("test-not-derived", {"type": "aes256-gcm96"}),
    ("test-exportable", {"type": "aes256-gcm96", "derived": True, "exportable": True}),
    ("test-wrong-type", {"type": "chacha20-poly1305", "derived": True}),
])
def test_existing_key_with_wrong_settings_is_refused(admin: VaultClient, layout: Layout,
                                                     name: str, create: dict[str, object],
                                                     ) -> None:
    admin.write(f"transit/keys/{name}", "create key", create)
    wrong = dataclasses.replace(layout, keys={name: layout.keys["ivr-dtmf"]})
    with pytest.raises(ConfigError, match=name):
        bootstrap(admin, wrong)
    # It was not "fixed" behind the operator's back either.
    assert key(admin, name)["type"] == create["type"]
