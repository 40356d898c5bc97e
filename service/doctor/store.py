"""The account store: there, with the schema the services need, and made under this Vault
(the ``ivr-lookup`` canary, :mod:`service.backend.keycheck`)."""

from __future__ import annotations

from collections.abc import Callable

from service.backend.enrolment import check_store_keys
from service.backend.keycheck import WAY_OUT
from service.doctor.report import Check
from service.errors import ConfigError, IvrVaultError
from service.settings import Settings
from service.store.accounts import TABLES, existing_tables
from service.vault.client import VaultClient

MIGRATE_FIX = "start the backend once (it creates what is missing), or restore the store"


def schema_status(settings: Settings) -> Check:
    """The store's schema, through the store's public API, read only.

    Today the store has no schema version: the row says which of its tables
    (:data:`~service.store.accounts.TABLES`) are there. Once versioned migrations exist,
    this is the one function to point at them: compare the store's schema version with
    the latest migration, and make the fix ``ivr-vault store migrate``."""
    name = "store schema"
    where = settings.store_path
    try:
        tables = existing_tables(where)
    except ConfigError as exc:
        return Check.failed(name, f"{where}: {exc}",
                            "set STORE_PATH to the backend's store (make run: "
                            ".dev/accounts.sqlite3), or start the backend to create one")
    missing = sorted(TABLES - tables)
    if missing:
        return Check.failed(name, f"{where}: tables missing: {', '.join(missing)}",
                            MIGRATE_FIX)
    return Check.passed(name, f"{where}: reachable; all {len(TABLES)} tables present "
                              "(no schema version yet)")


def canary_check(settings: Settings, backend: Callable[[], VaultClient]) -> Check:
    """Does this Vault reproduce the store's ``ivr-lookup`` canaries? The backend's own
    check (``ivr-vault accounts check-keys``), as the backend identity: HMACs of a fixed
    label, no caller data. ``backend`` makes a client of that identity (the check's
    Transit session closes it and revokes its token)."""
    name = f"store canary ({settings.lookup_key})"
    try:
        check = check_store_keys(settings, vault=backend())
    except IvrVaultError as exc:
        return Check.failed(name, f"could not check ({type(exc).__name__}: {exc})",
                            "see the vault and identity ivr-backend rows")
    if not check.ok:
        return Check.failed(name, str(check.error()).split(";")[0],
                            f"restore Vault from the backup that matches this store: "
                            f"{WAY_OUT} (a store made before canaries: `ivr-vault accounts "
                            "check-keys --adopt`, only if this Vault made it)")
    return Check.passed(name, "this Vault reproduces every canary the store holds")
