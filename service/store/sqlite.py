"""SQLite for a thread pool: one connection per thread, short transactions, no long sleeps.

Opening a connection costs more than the few statements a request runs, so each thread
keeps its own (sqlite3 connections must not be shared between threads at once). Writers
of this process queue on a lock, woken the moment it is free; SQLite's own busy handler is
off, because it backs off to 100 ms sleeps (bench/RESULTS.md: that was the lookup's p99).
Another process holding the write lock (``accounts add``, a second worker) is waited for
in 1 ms steps, for as long as the old 5 s busy timeout allowed.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

from service.errors import StoreConflict
from service.files import create_private

T = TypeVar("T")

BUSY_WAIT_S = 5.0
BUSY_STEP_S = 0.001


class ThreadConnections:
    """The SQLite :class:`~service.store.database.Database`."""

    engine: Literal["sqlite"] = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._opened_lock = threading.Lock()
        self._write_lock = threading.Lock()

    @property
    def display(self) -> str:
        return f"sqlite:///{self.path}"

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            return db
        # check_same_thread=False only so that close() may close it from another thread;
        # otherwise a connection is used by the thread that opened it and no other.
        create_private(self.path)
        db = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL syncs at checkpoints, not at every commit: a
        # committed transaction survives a crash of this process (it is in the WAL file),
        # but a power loss or OS crash may lose the last commits before the next
        # checkpoint: failed-PIN counts, a lock, a remembered answer, an upgraded verifier
        # (the old one still matches), or an account just written by `accounts add` (run
        # it again). In exchange the lookup does not wait for an fsync per write.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.row_factory = sqlite3.Row
        with self._opened_lock:
            self._opened.append(db)
        self._local.db = db
        return db

    def close(self) -> None:
        """Close every thread's connection. For shutdown, once no thread has store work
        left; it takes the write lock so that no transaction is cut short."""
        with self._write_lock, self._opened_lock:
            for db in self._opened:
                db.close()
            self._opened.clear()
            self._local = threading.local()

    def run(
        self,
        work: Callable[[sqlite3.Connection], T],
        *,
        write: bool = False,
        timeout: float | None = None,
    ) -> T:
        """``work`` on this thread's connection; with ``write``, inside one BEGIN IMMEDIATE
        transaction. Retried from the start while another process holds the database."""
        deadline: float | None = None
        while True:
            try:
                db = self.connection()
                if not write:
                    return work(db)
                with self._write_lock:
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        result = work(db)
                        db.execute("COMMIT")
                    except BaseException:
                        if db.in_transaction:
                            db.execute("ROLLBACK")
                        raise
                    return result
            except sqlite3.IntegrityError as exc:
                # "UNIQUE constraint failed: accounts.card_verifier": names, never values.
                raise StoreConflict(f"{self.path}: {exc}") from None
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                now = time.monotonic()
                deadline = now + BUSY_WAIT_S if deadline is None else deadline
                if now >= deadline:
                    raise
            time.sleep(BUSY_STEP_S)


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database, by SQLite's online backup API: the
    copy is one point in time even while another process writes (a file copy taken
    during a write, or without the ``-wal`` file, can be torn). ``target`` is replaced
    in place, under SQLite's own locks, so an open reader never sees half of it."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=BUSY_WAIT_S)
    try:
        dst = sqlite3.connect(target, timeout=BUSY_WAIT_S)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
