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
from service.errors import ConfigError, VaultAuthError
from service.settings import Secret
from service.vault.bootstrap import Layout, RoleCredentials, bootstrap, issue_credentials
from service.vault.client import AppRoleCredentials, VaultClient


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
        roles = {
            name: admin.read(f"auth/approle/role/{name}", "read role")["data"]
            for name in layout.roles
        }
        policies = {
            name: admin.read(f"sys/policies/acl/{name}", "read policy")["data"]["policy"]
            for name in layout.policies
        }
        return (
            key(admin, "ivr-dtmf")["latest_version"],
            key(admin, "ivr-lookup")["latest_version"],
            roles,
            policies,
            sorted(admin.read("sys/mounts", "mounts")["data"]),
        )

    before = snapshot()
    bootstrap(admin)
    bootstrap(admin)
    assert snapshot() == before
    assert set(layout.policies) == {"ivr-webhook", "ivr-backend", "ivr-keyadmin", "ivr-backup"}


def throwaway_role(admin: VaultClient, name: str) -> str:
    """A role of its own: issuing for the session's roles would destroy the secret-ids
    the session's services log in with."""
    admin.write(
        f"auth/approle/role/{name}",
        "write role",
        {"token_policies": ["ivr-webhook"], "token_no_default_policy": True, "secret_id_ttl": "1h"},
    )
    return name


def logs_in(vault: DevVault, creds: RoleCredentials) -> bool:
    try:
        VaultClient(
            vault.addr,
            AppRoleCredentials(Secret(creds.role_id), Secret(creds.secret_id)),
            timeout=5,
        ).ensure_login()
    except VaultAuthError:
        return False
    return True


def test_issuing_a_secret_id_destroys_the_others(
    admin: VaultClient, dev_vault: DevVault, layout: Layout
) -> None:
    role = throwaway_role(admin, "test-issue")
    first = issue_credentials(admin, [role])[role]
    second = issue_credentials(admin, [role])[role]
    assert first.secret_id != second.secret_id
    assert not logs_in(dev_vault, first)
    assert logs_in(dev_vault, second)
    accessors = admin.request("LIST", f"auth/approle/role/{role}/secret-id", "list")
    assert len(accessors["data"]["keys"]) == 1


def test_cli_bootstrap_is_idempotent_and_keeps_valid_credentials(
    admin: VaultClient, dev_vault: DevVault, layout: Layout, tmp_path: Path
) -> None:
    role = throwaway_role(admin, "test-cli")
    # The admin token travels by environment, never argv.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **dev_vault.env()}
    command = [
        sys.executable,
        "-m",
        "service",
        "bootstrap",
        "--credentials",
        f"{role}={tmp_path / 'creds'}",
    ]

    def run(*extra: str) -> tuple[str, RoleCredentials]:
        done = subprocess.run(
            [*command, *extra], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        assert "bootstrap complete" in done.stdout
        assert dev_vault.root_token.reveal() not in done.stdout + done.stderr
        return done.stdout, RoleCredentials(
            role,
            (tmp_path / "creds" / "role_id").read_text().strip(),
            (tmp_path / "creds" / "secret_id").read_text().strip(),
        )

    out, first = run()
    assert "wrote" in out
    assert (tmp_path / "creds" / "role_id").stat().st_mode & 0o777 == 0o600
    out, again = run()  # a second `up`: services still use the first secret-id
    assert "valid; kept" in out and again == first
    out, rotated = run("--rotate")
    assert "older secret-ids destroyed" in out and rotated.secret_id != first.secret_id
    assert not logs_in(dev_vault, first) and logs_in(dev_vault, rotated)
    # Destroyed behind its back (or expired): the next run issues a new one.
    issue_credentials(admin, [role])
    out, replaced = run()
    assert "wrote" in out and logs_in(dev_vault, replaced)


@pytest.mark.parametrize(
    ("name", "create"),
    [
        ("test-not-derived", {"type": "aes256-gcm96"}),
        ("test-exportable", {"type": "aes256-gcm96", "derived": True, "exportable": True}),
        ("test-wrong-type", {"type": "chacha20-poly1305", "derived": True}),
    ],
)
def test_existing_key_with_wrong_settings_is_refused(
    admin: VaultClient,
    layout: Layout,
    name: str,
    create: dict[str, object],
) -> None:
    admin.write(f"transit/keys/{name}", "create key", create)
    wrong = dataclasses.replace(layout, keys={name: layout.keys["ivr-dtmf"]})
    with pytest.raises(ConfigError, match=name):
        bootstrap(admin, wrong)
    # It was not "fixed" behind the operator's back either.
    assert key(admin, name)["type"] == create["type"]


def test_production_binds_the_operator_identities_and_bounds_their_secret_ids(
    tmp_path: Path,
) -> None:
    """docs/security.md, "smaller items": in production the key-admin and backup secret-ids were
    bound to no
    network, and the backup one lasted 90 days with unlimited uses. The prod profile binds
    every identity to the internal network (here 10.99.0.0/16: this test's 127.0.0.1 is
    outside it) and gives backup a week and 14 logins, key-admin a day and 10."""
    vault = DevVault.start(tmp_path / "vault")
    try:
        admin = VaultClient(vault.addr, vault.root_token, timeout=10)
        layout = bootstrap(admin, Layout.load(profile="prod", bound_cidrs=["10.99.0.0/16"]))
        creds = issue_credentials(
            admin, ["ivr-backup", "ivr-keyadmin"], approle_mount=layout.approle_mount
        )
        expected = {"ivr-backup": (7 * 86400, 14), "ivr-keyadmin": (86400, 10)}
        for role, (ttl, uses) in expected.items():
            found = admin.write(
                f"auth/{layout.approle_mount}/role/{role}/secret-id/lookup",
                "lookup",
                {"secret_id": creds[role].secret_id},
            )["data"]
            assert (found["secret_id_ttl"], found["secret_id_num_uses"]) == (ttl, uses), role
            spec = admin.read(f"auth/{layout.approle_mount}/role/{role}", "role")["data"]
            assert spec["secret_id_bound_cidrs"] == ["10.99.0.0/16"], role
            assert spec["token_bound_cidrs"] == ["10.99.0.0/16"], role
            outside = VaultClient(
                vault.addr,
                AppRoleCredentials(Secret(creds[role].role_id), Secret(creds[role].secret_id)),
                timeout=10,
            )
            with pytest.raises(VaultAuthError):
                outside.read("auth/token/lookup-self", "lookup")
    finally:
        vault.stop()
