"""What the store's SQL runs on: one small interface over SQLite and PostgreSQL.

Statements are written once, with ``?`` placeholders and SQL that both engines speak
(``INSERT … ON CONFLICT … DO UPDATE``, ``RETURNING``: SQLite ≥ 3.35); PostgreSQL's
connection turns the placeholders into psycopg's ``%s``. Where the engines really differ
(row locks, the id column, the migration lock) the code says so by ``engine``.

A :class:`Database` runs a piece of work on one connection; with ``write=True`` inside one
transaction that commits whole or not at all: SQLite's ``BEGIN IMMEDIATE`` (the one write
lock: transactions are one after the other), PostgreSQL's ``BEGIN`` at READ COMMITTED with
explicit row locks (``service/store/accounts.py``, :class:`PostgresLedger`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from service.settings import StoreUrl
from service.store.sqlite import ThreadConnections

T = TypeVar("T")

Engine = Literal["sqlite", "postgresql"]


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    @property
    def rowcount(self) -> int: ...


class Connection(Protocol):
    """The one method the store's SQL needs: a statement with ``?`` placeholders."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor: ...


class Database(Protocol):
    @property
    def engine(self) -> Engine: ...

    @property
    def display(self) -> str:
        """The store's URL as logs and errors may show it (no password)."""
        ...

    def run(
        self, work: Callable[[Connection], T], *, write: bool = False, timeout: float | None = None
    ) -> T:
        """``work`` on one connection; with ``write``, inside one transaction, which
        PostgreSQL ends past ``timeout`` seconds (SQLite's is local and ignores it)."""
        ...

    def close(self) -> None: ...


def store_url(target: StoreUrl | str | Path) -> StoreUrl:
    """A :class:`StoreUrl` as given, or a path: a SQLite file."""
    return target if isinstance(target, StoreUrl) else StoreUrl.sqlite(str(target))


def open_database(url: StoreUrl, *, pool_size: int = 4, serving: bool = False) -> Database:
    """The engine ``url`` names. ``pool_size``: PostgreSQL connections at most, as many as
    threads that run store work at once (SQLite keeps one per thread anyway). ``serving``:
    the backend's, which serve callers' lookups (PostgreSQL: the server-side limits of
    ``service/store/postgres.py``)."""
    if url.engine == "postgresql":
        from service.store.postgres import PostgresDatabase  # psycopg only when used

        return PostgresDatabase(url, pool_size=pool_size, serving=serving)
    path = Path(url.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return ThreadConnections(path)
