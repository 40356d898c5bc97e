"""The account store: there, with the schema the services need, and made under this Vault
(the ``ivr-lookup`` canary, :mod:`service.backend.keycheck`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from service.backend.callers import cut_off_now
from service.backend.enrolment import check_store_keys
from service.backend.keycheck import WAY_OUT
from service.doctor.report import Check
from service.errors import IvrVaultError
from service.settings import Settings
from service.store.accounts import Store
from service.store.database import open_database
from service.store.migrations import LATEST, legacy_accounts, missing_tables, schema_version
from service.vault.client import VaultClient

MIGRATE_FIX = "`ivr-vault store migrate` (docs/deployment.md), or restore the store"


def schema_status(settings: Settings) -> Check:
    """The store is there and at this release's schema version, with every table; read
    only: doctor opens no store that would create or migrate what it finds missing."""
    name = "store schema"
    url = settings.store
    if url.engine == "sqlite" and not Path(url.path).is_file():
        return Check.failed(
            name,
            f"{url.display}: no store there",
            "set STORE_URL (or STORE_PATH) to the backend's store (make run: "
            ".dev/accounts.sqlite3), or `ivr-vault store migrate` to make one",
        )
    try:
        database = open_database(url, pool_size=1)
        try:
            version, missing = schema_version(database), missing_tables(database)
            legacy = legacy_accounts(database) if version == LATEST and not missing else 0
        finally:
            database.close()
    except (IvrVaultError, sqlite3.Error) as exc:
        return Check.failed(
            name,
            f"{url.display}: not reachable ({type(exc).__name__})",
            "see that the database is up and STORE_URL names it",
        )
    if version > LATEST:
        return Check.failed(
            name,
            f"{url.display}: schema at version {version}, newer than this release knows ({LATEST})",
            "run the release that migrated it",
        )
    if version < LATEST:
        return Check.failed(
            name,
            f"{url.display}: schema at version {version}, this release needs {LATEST}",
            MIGRATE_FIX,
        )
    if missing:
        return Check.failed(
            name,
            f"{url.display}: tables missing: {', '.join(missing)}",
            "restore the store from its backup (docs/backup.md)",
        )
    remaining = (
        f"; {legacy} migrated accounts still found by their card alone "
        "(LEGACY_CARD_LOOKUP; give each its account number: `ivr-vault accounts "
        "update --account A --set-account-number`)"
        if legacy
        else ""
    )
    return Check.passed(
        name, f"{url.display}: reachable; schema at version {LATEST} (this release's){remaining}"
    )


def canary_check(settings: Settings, backend: Callable[[], VaultClient]) -> Check:
    """Does this Vault reproduce the store's ``ivr-lookup`` canaries? The backend's own
    check (``ivr-vault accounts check-keys``), as the backend identity: HMACs of a fixed
    label, no caller data. ``backend`` makes a client of that identity (the check's
    Transit session closes it and revokes its token)."""
    name = f"store canary ({settings.lookup_key})"
    try:
        check = check_store_keys(settings, vault=backend())
    except IvrVaultError as exc:
        return Check.failed(
            name,
            f"could not check ({type(exc).__name__}: {exc})",
            "see the vault and identity ivr-backend rows",
        )
    if not check.ok:
        return Check.failed(
            name,
            str(check.error()).split(";")[0],
            f"restore Vault from the backup that matches this store: "
            f"{WAY_OUT} (a store made before canaries: `ivr-vault accounts "
            "check-keys --adopt`, only if this Vault made it)",
        )
    return Check.passed(name, "this Vault reproduces every canary the store holds")


def cut_off_check(settings: Settings) -> Check:
    """How many caller numbers are cut off now: never a failure (the lockout doing its
    work), a reminder with the way out when there are any. Read from the store alone."""
    name = "caller numbers cut off"
    try:
        store = Store(settings.store, pool_size=1)
        try:
            count = cut_off_now(store, settings)
        finally:
            store.close()
    except (IvrVaultError, sqlite3.Error) as exc:
        return Check.failed(name, f"not counted ({type(exc).__name__})", "see the store schema row")
    if count == 0:
        return Check.passed(name, "none")
    return Check.reminder(
        name,
        f"{count} now (CALLER_FAILURE_LIMIT failed lookups within "
        "CALLER_FAILURE_WINDOW); one that should call again: "
        "`ivr-vault callers reset`",
    )
