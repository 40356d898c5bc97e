"""PostgreSQL for the tests: one real server per session (``service/devtools/postgres.py``,
the same code ``make run-ha`` starts), and a database of its own for each test.

Never mocked and never skipped: without PostgreSQL the tests that need it fail, with the
one line that says how to install it (``make test`` installs it).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from service.devtools.postgres import LocalPostgres
from service.errors import ConfigError
from service.settings import Settings, StoreUrl
from service.store.migrations import migrate_store

ENGINES = ("sqlite", "postgresql")
_numbers = itertools.count(1)


def start_postgres() -> LocalPostgres:
    try:
        server = LocalPostgres()
    except ConfigError as exc:
        pytest.fail(str(exc), pytrace=False)
    server.start()
    return server


def database_name(label: str) -> str:
    """A database name from a test's name: unique, at most 63 characters."""
    slug = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:48]
    return f"t{next(_numbers)}_{slug}"


def pg_store_url(server: LocalPostgres, label: str, *, migrated: bool = True) -> StoreUrl:
    """A new, empty database on ``server``, as STORE_URL names it; migrated unless asked
    not to be."""
    url = Settings.from_environ({"STORE_URL": server.new_database(database_name(label))}).store
    if migrated:
        migrate_store(url)
    return url


def engine_store_url(engine: str, request: pytest.FixtureRequest, tmp_path: Path,
                     ) -> StoreUrl:
    """A new, empty, migrated store on ``engine``: a SQLite file in ``tmp_path``, or a
    database of its own on the session's PostgreSQL (started only when asked for)."""
    if engine == "sqlite":
        url = StoreUrl.sqlite(str(tmp_path / "accounts.sqlite3"))
        migrate_store(url)
        return url
    return pg_store_url(request.getfixturevalue("postgres"), request.node.name)


def url_with_password(server: LocalPostgres, database: str) -> str:
    """What an operator puts in STORE_URL_FILE: the URL with the password in it."""
    password = server.passfile.read_text().strip().rsplit(":", 1)[1]
    return f"postgresql://ivr:{password}@127.0.0.1:{server.port}/{database}"


def env_for(url: StoreUrl) -> dict[str, str]:
    """The environment that names this store to a process."""
    if url.engine == "sqlite":
        return {"STORE_PATH": url.path}
    assert url.conninfo is not None
    return {"STORE_URL": url.conninfo.reveal()}
