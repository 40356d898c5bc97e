"""Sealed records: Transit ciphertexts the service keeps at rest, in the account store.

Filled today by ``ivr-vault legacy convert --store`` (the tutorial's ciphertexts, re-encoded
under the imported ``ivr-legacy`` key); any Transit key may have rows here. Each row carries
its key version as a column, so ``keys status`` can count them and ``keys rewrap`` can select
exactly the rows still behind the key's latest version. The store never holds a plaintext.

A ciphertext of a derived key only rewraps with its context, so the row keeps the context
(base64, as Transit wants it); rows of a non-derived key leave it NULL.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from service.formats import ciphertext_version
from service.settings import StoreUrl
from service.store.database import Connection, store_url
from service.store.migrations import open_current


@dataclass(frozen=True)
class SealedRecord:
    id: int
    key_name: str
    key_version: int
    ciphertext: str
    context: str | None


def _version(ciphertext: str) -> int:
    version = ciphertext_version(ciphertext)
    if version is None:
        raise ValueError("not a Transit ciphertext")
    return version


class SealedStore:
    """The ``sealed_records`` table, reached the way :class:`~service.store.accounts.Store`
    reaches the same store: one ``run`` per call, each write one transaction."""

    def __init__(self, target: StoreUrl | str | Path) -> None:
        self.url = store_url(target)
        self._db = open_current(self.url, pool_size=2)
        self._run = self._db.run

    def close(self) -> None:
        self._db.close()

    def add(
        self, key_name: str, ciphertexts: Iterable[str], context: str | None = None
    ) -> list[int]:
        """Insert in one transaction: all rows or none."""
        now = time.time()
        rows = [(key_name, _version(ct), ct, context, now, now) for ct in ciphertexts]

        def work(db: Connection) -> list[int]:
            return [
                int(
                    db.execute(
                        "INSERT INTO sealed_records(key_name, key_version, ciphertext, context,"
                        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                        row,
                    ).fetchone()[0]
                )
                for row in rows
            ]

        return self._run(work, write=True)

    def get(self, record_id: int) -> SealedRecord | None:
        row = self._run(
            lambda db: db.execute(
                "SELECT id, key_name, key_version, ciphertext, context FROM sealed_records"
                " WHERE id=?",
                (record_id,),
            ).fetchone()
        )
        return SealedRecord(*row) if row else None

    def key_names(self) -> list[str]:
        rows = self._run(
            lambda db: db.execute(
                "SELECT DISTINCT key_name FROM sealed_records ORDER BY key_name"
            ).fetchall()
        )
        return [str(r[0]) for r in rows]

    def version_counts(self, key_name: str) -> dict[int, int]:
        rows = self._run(
            lambda db: db.execute(
                "SELECT key_version, COUNT(*) FROM sealed_records WHERE key_name=?"
                " GROUP BY key_version",
                (key_name,),
            ).fetchall()
        )
        return {int(v): int(n) for v, n in rows}

    def count_below(self, key_name: str, version: int) -> int:
        (count,) = self._run(
            lambda db: db.execute(
                "SELECT COUNT(*) FROM sealed_records WHERE key_name=? AND key_version<?",
                (key_name, version),
            ).fetchone()
        )
        return int(count)

    def behind(
        self, key_name: str, latest: int, *, after_id: int, limit: int
    ) -> list[SealedRecord]:
        """The next ``limit`` rows (by id, after ``after_id``) whose version is below
        ``latest``. Selecting by version makes a rerun pick up exactly the unfinished rows."""
        rows = self._run(
            lambda db: db.execute(
                "SELECT id, key_name, key_version, ciphertext, context FROM sealed_records"
                " WHERE key_name=? AND key_version<? AND id>? ORDER BY id LIMIT ?",
                (key_name, latest, after_id, limit),
            ).fetchall()
        )
        return [SealedRecord(*r) for r in rows]

    def replace(self, updates: Sequence[tuple[int, str, str]]) -> int:
        """Swap in rewrapped ciphertexts, one transaction per batch. Each update is
        (id, old ciphertext, new ciphertext); a row changed meanwhile is left alone.
        Returns how many rows changed."""
        now = time.time()
        rows = [(new, _version(new), now, record_id, old) for record_id, old, new in updates]

        def work(db: Connection) -> int:
            return sum(
                db.execute(
                    "UPDATE sealed_records SET ciphertext=?, key_version=?, updated_at=?"
                    " WHERE id=? AND ciphertext=?",
                    row,
                ).rowcount
                for row in rows
            )

        return self._run(work, write=True)
