"""The whole store into a SQLite file and back, for either engine: what a backup holds.

A backup's store member is a SQLite file whatever the engine (``service/backup/archive.py``),
so a backup does not depend on the engine, the PostgreSQL version, or tools beside the
service: both engines have one schema (``service/store/migrations.py``).

- SQLite: SQLite's online backup API, as before (a consistent copy of the live file).
- PostgreSQL: a logical copy of the store's tables (:data:`TABLES`) through psycopg.
  Out: one REPEATABLE READ, READ ONLY transaction, so every table is read at the same
  instant while the backends keep writing. In: one transaction that locks the tables,
  empties them, ``COPY``s the rows in and moves the id sequences past the ids restored;
  the backends wait for it and then see the restored store whole, never half of it.

Why not ``pg_dump``/``pg_restore``: they must match the server's major version, are not
in the service's image, and their archive restores only into PostgreSQL; this needs
nothing but the service and its schema, and a SQLite backup restores into PostgreSQL (and
back) as well.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from service.errors import ConfigError
from service.settings import StoreUrl
from service.store.migrations import TABLES, migrate, open_current
from service.store.postgres import PgConnection, PostgresDatabase
from service.store.sqlite import ThreadConnections, copy_database


def export_to_sqlite(store: StoreUrl, target: Path) -> None:
    """The store at ``store``, as one point in time, into a new SQLite file ``target``."""
    if store.engine == "sqlite":
        if not Path(store.path).exists():
            raise ConfigError(f"STORE_URL/STORE_PATH: no account store at {store.path}")
        copy_database(Path(store.path), target)
        return
    source = open_current(store, pool_size=1)
    assert isinstance(source, PostgresDatabase)
    copy = open_current(StoreUrl.sqlite(str(target)), pool_size=1)  # the schema, empty
    assert isinstance(copy, ThreadConnections)
    try:

        def read(conn: PgConnection) -> None:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            for table, columns in TABLES:
                rows = _rows(conn, table, columns)

                def write(
                    db: sqlite3.Connection,
                    sql: str = _insert(table, columns),
                    rows: Iterator[Any] = rows,
                ) -> None:
                    db.executemany(sql, rows)

                copy.run(write, write=True)

        source.run(read, write=True)
    finally:
        source.close()
        copy.close()


def import_from_sqlite(source: Path, store: StoreUrl) -> None:
    """Replace the store at ``store`` with the SQLite file ``source`` (migrated first, if
    it was made by an older release)."""
    if store.engine == "sqlite":
        target = Path(store.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_database(source, target)
        return
    with closing(open_current(StoreUrl.sqlite(str(source)), pool_size=1)) as backup:
        assert isinstance(backup, ThreadConnections)
        database = PostgresDatabase(store, pool_size=1)
        try:
            migrate(database)

            def write(conn: PgConnection) -> None:
                names = ", ".join(table for table, _ in TABLES)
                conn.execute(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")
                conn.execute(f"TRUNCATE {names}")
                with conn.raw.cursor() as cursor:
                    for table, columns in TABLES:
                        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                            for row in backup.connection().execute(_select(table, columns)):
                                copy.write_row(tuple(row))
                for table, columns in TABLES:
                    if "id" in columns:  # the next id assigned follows the ids restored
                        after = f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1"  # noqa: S608
                        conn.execute(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                            f" {after}, false)"
                        )

            database.run(write, write=True)
        finally:
            database.close()


# Table and column names below come from TABLES, never from input (hence noqa: S608).
def _select(table: str, columns: tuple[str, ...]) -> str:
    return f"SELECT {', '.join(columns)} FROM {table}"  # noqa: S608


def _insert(table: str, columns: tuple[str, ...]) -> str:
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608


def _rows(conn: PgConnection, table: str, columns: tuple[str, ...]) -> Iterator[Any]:
    """``table``'s rows, fetched a thousand at a time (a server-side cursor inside the
    snapshot's transaction), not all at once."""
    with conn.raw.cursor(name=f"export_{table}") as cursor:
        cursor.itersize = 1000
        cursor.execute(_select(table, columns))
        yield from cursor
