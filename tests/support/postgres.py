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

from service.devtools.postgres import OWNER, RUNTIME, LocalPostgres
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


def pg_store_url(
    server: LocalPostgres, label: str, *, migrated: bool = True, owner: bool = False
) -> StoreUrl:
    """A new, empty database on ``server``, as STORE_URL names it: migrated (by the
    migration role) and the runtime role's URL, as a backend has it; the migration role's
    when not migrated (the test migrates) or when ``owner`` (a restore's target)."""
    name = database_name(label)
    owner_url = Settings.from_environ({"STORE_URL": server.new_database(name)}).store
    if not migrated:
        return owner_url
    migrate_store(owner_url)
    if owner:
        return owner_url
    return Settings.from_environ({"STORE_URL": server.url_for(name, RUNTIME)}).store


def engine_store_url(
    engine: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> StoreUrl:
    """A new, empty, migrated store on ``engine``: a SQLite file in ``tmp_path``, or a
    database of its own on the session's PostgreSQL (started only when asked for)."""
    if engine == "sqlite":
        url = StoreUrl.sqlite(str(tmp_path / "accounts.sqlite3"))
        migrate_store(url)
        return url
    return pg_store_url(request.getfixturevalue("postgres"), request.node.name)


def password_of(server: LocalPostgres, user: str) -> str:
    """``user``'s password, from the server's libpq password file."""
    for line in server.passfile.read_text().splitlines():
        *_, name, password = line.split(":")
        if name == user:
            return password
    raise KeyError(user)


def url_with_password(server: LocalPostgres, database: str, user: str = OWNER) -> str:
    """What an operator puts in STORE_URL_FILE: the URL with the password in it."""
    return f"postgresql://{user}:{password_of(server, user)}@127.0.0.1:{server.port}/{database}"


def env_for(url: StoreUrl) -> dict[str, str]:
    """The environment that names this store to a process."""
    if url.engine == "sqlite":
        return {"STORE_PATH": url.path}
    assert url.conninfo is not None
    return {"STORE_URL": url.conninfo.reveal()}
