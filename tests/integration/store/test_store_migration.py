"""The upgrade from the release before schema 3, on both engines, for real: the backup in
tests/data/store-v2/ (made by that release: tests/data/store-v2/make_fixture.py) restored
into a new OpenBao and into a SQLite or PostgreSQL store, which the restore migrates to
schema 3; then real backend and webhook processes serve its accounts.

A migrated account has no account number: it is found by its card alone
(LEGACY_CARD_LOOKUP, ``auto``: on while any remain), whatever the caller did at the first
prompt; its first success binds its verifiers to its salt; ``accounts update
--set-account-number`` ends its card-only lookup, and ``doctor`` counts those left.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from service.backup.archive import Unlock, open_backup
from service.devtools.caller import REGISTERED, Caller
from service.devtools.devstack import DevVault
from service.doctor.store import schema_status
from service.settings import Settings
from service.store.accounts import Store
from service.store.database import Connection, open_database
from service.store.migrations import _HISTORY as HISTORY
from service.store.migrations import MIGRATIONS, schema_version
from service.vault.bootstrap import issue_credentials
from service.vault.client import VaultClient
from service.vault.operator_init import DevKeyring
from service.webhook import twiml
from tests.support.demo import FOUND as DEMO
from tests.support.postgres import ENGINES, pg_store_url
from tests.support.repo import ROOT
from tests.support.stack import ROLES, make_stack
from tests.support.store import query

FIXTURE = ROOT / "tests" / "data" / "store-v2"
ADDED = "Thank you. Your account number is AC55500011 and your balance is 99.10"


def schema_2_store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """A PostgreSQL store at schema 2 (the release before), holding the fixture's rows."""
    url = pg_store_url(request.getfixturevalue("postgres"), "schema_2", migrated=False)
    assert url.conninfo is not None
    member = tmp_path / "member.sqlite3"
    with open_backup(FIXTURE / "backup.tar.gz", Unlock(None, None), allow_unsealed=True) as old:
        shutil.copy(old.store, member)
    database = open_database(url, pool_size=1)
    try:

        def load(db: Connection) -> None:
            db.execute(HISTORY)
            for migration in MIGRATIONS[:2]:
                migration.apply(db, "postgresql")
                db.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, 0)",
                    (migration.version, migration.name),
                )
            with closing(sqlite3.connect(member)) as old:
                for table in ("accounts", "card_lockout", "lookup_canaries"):
                    rows = old.execute(f"SELECT * FROM {table}").fetchall()
                    for row in rows:
                        marks = ", ".join("?" for _ in row)
                        db.execute(f"INSERT INTO {table} VALUES ({marks})", row)

        database.run(load, write=True)
        assert schema_version(database) == 2
    finally:
        database.close()
    return {"STORE_URL": url.conninfo.reveal()}


def cli(
    *args: str,
    env: Mapping[str, str],
    cwd: Path,
    stdin: str = "",
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=cwd,
        input=stdin,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_a_store_of_the_release_before_is_restored_migrated_and_served(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    keys = tmp_path / "vault-keys.dev-only"  # the old Vault's: they open the snapshot
    shutil.copy(FIXTURE / "vault-keys.dev-only", keys)
    keys.chmod(0o600)
    store_env = {"STORE_PATH": str(tmp_path / "stack" / "accounts.sqlite3")}
    if engine == "postgresql":  # restored into a store at this release's schema
        # A restore replaces tables: the migration role's work (docs/backup.md).
        url = pg_store_url(request.getfixturevalue("postgres"), "restored", owner=True)
        assert url.conninfo is not None
        store_env = {"STORE_URL": url.conninfo.reveal()}
    vault = DevVault.start(tmp_path / "vault")  # a new cluster, its own keys
    try:
        # A backup of the release before is plain (neither encrypted nor signed): refused,
        # nothing touched, unless asked for, and then restored with a warning.
        restore = ("restore", "--from", str(FIXTURE / "backup.tar.gz"))
        refused = cli(*restore, cwd=tmp_path, env={**vault.env(), **store_env})
        assert (refused.returncode, refused.stderr.splitlines()) == (
            2,
            [
                f"ivr-vault: bad input: --from: {FIXTURE / 'backup.tar.gz'} is a plain backup "
                "(from before backups were sealed): neither encrypted nor signed, nothing "
                "proves who made it; restore it only if you know where it came from, with "
                "--allow-unsealed"
            ],
        )
        assert not (tmp_path / "stack").exists()
        assert not list(tmp_path.glob("accounts.before-restore-*"))
        assert not VaultClient(vault.addr, vault.root_token, timeout=5).health()["sealed"]
        restored = cli(
            *restore,
            "--allow-unsealed",
            "--unseal-keys-file",
            str(keys),
            cwd=tmp_path,
            env={**vault.env(), **store_env},
        )
        assert restored.returncode == 0, restored.stderr + restored.stdout
        assert (
            f"ivr-vault: warning: {FIXTURE / 'backup.tar.gz'} is a plain backup (from before "
            "backups were sealed): neither encrypted nor signed, nothing proves who made it; "
            "restoring it as --allow-unsealed asks"
        ) in restored.stderr.splitlines()
        (old,) = DevKeyring(keys).read()
        admin = VaultClient(vault.addr, old.root_token, timeout=10)
        credentials = issue_credentials(admin, list(ROLES))
        (tmp_path / "stack").mkdir(exist_ok=True)
        if engine == "postgresql":
            # And PostgreSQL's own migration, in place: a store at schema 2 holding the
            # backup's rows, migrated by `ivr-vault store migrate`, is the one served.
            store_env = schema_2_store(request, tmp_path)
            migrated = cli("store", "migrate", cwd=tmp_path, env=store_env)
            assert migrated.returncode == 0, migrated.stderr
            assert "migrated to version 3 (3: identification" in migrated.stdout
        stack = make_stack(vault, credentials, tmp_path / "stack", backend_env=store_env)
        try:
            settings = Settings.from_environ(stack.backend.env)
            store = Store(settings.store)
            try:
                assert store.legacy_accounts() == 2
                assert [r[0] for r in query(store, "SELECT salted FROM accounts")] == [0, 0]
            finally:
                store.close()
            assert (
                "2 migrated accounts still found by their card alone"
                in schema_status(settings).detail
            )

            def call(card: str, pin: str, identify: str = REGISTERED) -> str:
                heard: list[str] = []
                with httpx.Client(timeout=20) as client:
                    Caller(
                        stack.webhook.url,
                        stack.twilio_token,
                        client,
                        say=heard.append,
                        identify=identify,
                    ).play([card, pin])
                return heard[-1]

            # Star or any account number: the card-only lookup finds them.
            assert call("1234", "4321") == DEMO
            assert call("5678", "7351", identify="11112222") == ADDED
            assert call("5678", "0000") == twiml.NOT_FOUND
            assert call("1234", "4321") == DEMO  # again, now with salted verifiers
            store = Store(settings.store)
            try:
                assert sorted(r[0] for r in query(store, "SELECT salted FROM accounts")) == [1, 1]
            finally:
                store.close()

            updated = cli(
                "accounts",
                "update",
                "--account",
                "AC55500011",
                "--set-account-number",
                cwd=tmp_path,
                stdin="86420975\n",
                env=stack.backend.env,
            )
            assert updated.returncode == 0, updated.stderr
            assert "86420975" not in updated.stdout + updated.stderr
            assert call("5678", "7351") == twiml.NOT_FOUND  # its card-only lookup ended
            assert call("5678", "7351", identify="86420975") == ADDED
            assert (
                "1 migrated accounts still found by their card alone"
                in schema_status(settings).detail
            )
            refused = cli(
                "accounts",
                "update",
                "--account",
                "AC12345678",
                "--set-account-number",
                cwd=tmp_path,
                stdin="86420975\n",
                env=stack.backend.env,
            )
            assert (refused.returncode, refused.stderr.strip().splitlines()[-1]) == (
                2,
                "ivr-vault: that account number is already enrolled on another account",
            )
        finally:
            stack.stop()
    finally:
        vault.stop()
