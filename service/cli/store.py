"""``ivr-vault store migrate``: bring the account store's schema up to this release.

Idempotent; safe while services run and while another migrate runs (they wait for each
other). ``make run``, compose's ``vault-init`` and ``ivr-vault bootstrap`` (when STORE_URL or
STORE_PATH is set) run it too; a PostgreSQL store must have had it before a backend can
open it (service/store/migrations.py says why).
"""

from __future__ import annotations

import argparse

from service.settings import Settings


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from service.store.migrations import migrate_store

    print(f"ivr-vault: {migrate_store(settings.store)}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("store", help="the account store (STORE_URL)")
    cmds = group.add_subparsers(dest="store_command", required=True)
    p = cmds.add_parser("migrate", help="apply the schema migrations the store lacks (idempotent)")
    p.set_defaults(func=_migrate)
