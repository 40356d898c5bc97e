"""``ivr-vault accounts import FILE``: many accounts from a CSV or JSON-lines file, streamed.

- **Format**, by the suffix: ``.csv`` with the header :data:`HEADER` (``callers``: zero or
  more E.164 numbers separated by ``;``), or ``.jsonl`` with the same keys, ``callers`` a
  list. Every row goes through enrolment's checks (:func:`~.enrolment.problem`).
- **Streaming.** Rows are read, HMACed and written :data:`CHUNK_ROWS` at a time: the
  importer holds one chunk (and the one being written) whatever the file's size. Transit's
  HMACs go in whole-row batches (:func:`~.enrolment.make_records`) at the version the
  import started with, up to ``parallel`` calls at once; while a chunk is written, the
  next one is HMACed.
- **Re-runs.** A row whose label is already in the store with the same content is skipped:
  the content is compared by verifiers, Transit's HMACs of the row recomputed with the
  stored account's salt (:func:`~.enrolment.same_content`), so nothing of the row but its
  verifiers is needed and nothing more is stored. Each chunk is written in one transaction,
  so an import killed midway leaves whole chunks, and running it again adds the rest with
  no duplicates. A label present with different content is refused, unless ``update``.
- **Refusals** name the line and say why, never quoting a digit of it.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from service.backend.enrolment import (
    REFUSALS,
    Enrolment,
    calls,
    check_canaries,
    make_records,
    problem,
    same_content,
)
from service.backend.keycheck import CANARY_INPUT
from service.errors import EnrolmentRefused
from service.settings import Settings
from service.store.accounts import AccountRecord, Refusal, Store, verifier_version
from service.vault.client import VaultClient
from service.vault.session import transit_session
from service.web.metrics import Metrics

HEADER = ("account", "balance", "account_number", "card_last4", "pin", "callers")
# Rows per step (one store transaction, one `IN (...)` read of the labels present).
CHUNK_ROWS = 1000
# How long one Transit call of the import may take (VAULT_TIMEOUT, 2 s, is a caller's
# budget). An import's calls carry up to 240 inputs, 4 at once, and one slow answer
# aborts the import (a re-run resumes it): on this shared two-core machine at load average
# 19, a call took more than 2 s and the 1,000,000-account bench stopped at 565,000 rows.
IMPORT_VAULT_TIMEOUT_S = 30.0
MALFORMED_CSV = f"malformed: expected {len(HEADER)} columns ({','.join(HEADER)})"
MALFORMED_JSON = (
    "malformed: expected one JSON object with the keys "
    f"{', '.join(HEADER)} (callers a list, the others strings)"
)


@dataclass(frozen=True)
class Line:
    """One row of the file: its line number, and the row or why it is malformed."""

    number: int
    row: Enrolment | None
    problem: str | None = None
    position: int = 0  # bytes of the file read so far (a progress bar's)


@dataclass
class Summary:
    rows: int = 0
    added: int = 0
    skipped: int = 0
    updated: int = 0
    refused: int = 0
    seconds: float = 0.0
    transit_calls: int = 0  # HMAC calls (the canary's and the rows')


Refuse = Callable[[int, str], None]  # (line number, why)
Progress = Callable[[Summary, int], None]  # (so far, bytes read)


def read_lines(path: Path) -> Iterator[Line]:
    """The rows of ``path``, one at a time. :class:`EnrolmentRefused` for a file that is
    neither ``.csv`` nor ``.jsonl``, or a CSV without the header."""
    if path.suffix not in (".csv", ".jsonl"):
        raise EnrolmentRefused(f"{path.name}: expected a .csv or .jsonl file")
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise EnrolmentRefused(f"{path}: cannot read ({exc.strerror})") from None
    with raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        try:
            yield from (_csv if path.suffix == ".csv" else _jsonl)(text, raw)
        except UnicodeDecodeError:
            raise EnrolmentRefused(f"{path.name}: not UTF-8 text") from None


def _csv(text: io.TextIOWrapper, raw: io.BufferedReader) -> Iterator[Line]:
    reader = csv.reader(text)
    try:
        header = next(reader, None)
    except csv.Error:
        header = None
    if header is None or tuple(h.strip() for h in header) != HEADER:
        raise EnrolmentRefused(f"the first line must be the header {','.join(HEADER)}")
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield Line(reader.line_num, None, MALFORMED_CSV, raw.tell())
            continue
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(HEADER):
            yield Line(reader.line_num, None, MALFORMED_CSV, raw.tell())
            continue
        account, balance, number, last4, pin, callers = (f.strip() for f in fields)
        yield Line(
            reader.line_num,
            Enrolment(
                account,
                balance,
                number,
                last4,
                pin,
                tuple(c.strip() for c in callers.split(";") if c.strip()),
            ),
            None,
            raw.tell(),
        )


def _jsonl(text: io.TextIOWrapper, raw: io.BufferedReader) -> Iterator[Line]:
    for number, content in enumerate(text, 1):
        if not content.strip():
            continue
        try:
            obj = json.loads(content)
        except ValueError:
            obj = None
        if (
            not isinstance(obj, dict)
            or set(obj) != set(HEADER)
            or not all(isinstance(obj[k], str) for k in HEADER[:5])
            or not isinstance(obj["callers"], list)
            or not all(isinstance(c, str) for c in obj["callers"])
        ):
            yield Line(number, None, MALFORMED_JSON, raw.tell())
            continue
        account, balance, account_number, last4, pin = (obj[k].strip() for k in HEADER[:5])
        yield Line(
            number,
            Enrolment(
                account,
                balance,
                account_number,
                last4,
                pin,
                tuple(c.strip() for c in obj["callers"]),
            ),
            None,
            raw.tell(),
        )


class _Writer:
    """What a chunk's records become in the store (on the writer thread): added, skipped,
    updated or refused, counted in ``summary``."""

    def __init__(
        self, store: Store, summary: Summary, *, update: bool, refuse: Refuse, progress: Progress
    ) -> None:
        self.store, self.summary, self.update = store, summary, update
        self._refuse, self._progress = refuse, progress
        self._started = time.monotonic()
        self._refusals: list[tuple[int, str]] = []

    def __call__(
        self,
        chunk: Sequence[Line],
        records: Sequence[AccountRecord],
        early: Sequence[tuple[int, str]],
        position: int,
    ) -> None:
        """Write one chunk; its refusals (``early``: the rows refused before Vault, then
        the store's) reported in line order."""
        self._refusals = list(early)
        stored = self.store.stored([r.account for r in records])
        new: list[tuple[Line, AccountRecord]] = []
        changed: list[tuple[Line, AccountRecord]] = []
        for line, record in zip(chunk, records, strict=True):
            present = stored.get(record.account)
            if present is None:
                new.append((line, record))
            elif same_content(present, record):
                self.summary.skipped += 1
            elif self.update:
                changed.append((line, record))
            else:
                self._refusals.append(
                    (
                        line.number,
                        f"account {record.account} already "
                        "exists with other content (--update "
                        "replaces it)",
                    )
                )
        self.summary.added += self._put(new, self.store.add_accounts)
        self.summary.updated += self._put(changed, self.store.replace_accounts)
        for number, why in sorted(self._refusals):
            self.summary.refused += 1
            self._refuse(number, why)
        self.summary.seconds = time.monotonic() - self._started
        self._progress(self.summary, position)

    def _put(
        self,
        pairs: Sequence[tuple[Line, AccountRecord]],
        put: Callable[[Sequence[AccountRecord]], list[Refusal | None]],
    ) -> int:
        if not pairs:
            return 0
        written = 0
        for (line, record), refusal in zip(pairs, put([r for _, r in pairs]), strict=True):
            if refusal is None:
                written += 1
            else:
                self._refusals.append(
                    (line.number, REFUSALS[refusal].format(account=record.account))
                )
        return written


def import_file(
    settings: Settings,
    path: Path,
    *,
    update: bool = False,
    refuse: Refuse,
    progress: Progress,
    parallel: int = 4,
    vault: VaultClient | None = None,
) -> Summary:
    """Import ``path`` into the store (the module's docstring says how). Each refused row
    is handed to ``refuse``; ``progress`` after each chunk written."""
    lines = read_lines(path)
    first = list(islice(lines, 1))  # the suffix and the header, checked before Vault
    vault = vault or VaultClient.from_settings(
        settings, pool_size=parallel, timeout=max(settings.vault_timeout, IMPORT_VAULT_TIMEOUT_S)
    )
    summary = Summary()
    started = time.monotonic()
    store = Store(settings.store, pool_size=2)
    write = _Writer(store, summary, update=update, refuse=refuse, progress=progress)
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-writer")

    async def run() -> None:
        async with transit_session(settings, Metrics(), threads=parallel, vault=vault) as transit:
            await check_canaries(transit, settings, store)
            (canary,) = await transit.hmac([CANARY_INPUT])
            summary.transit_calls += 1
            store.add_canary(canary, time.time())
            version = verifier_version(canary)  # every row at the version it started with
            loop = asyncio.get_running_loop()
            pending: asyncio.Future[None] | None = None
            every = _chain(first, lines)
            while chunk := list(islice(every, CHUNK_ROWS)):
                summary.rows += len(chunk)
                good: list[Line] = []
                early: list[tuple[int, str]] = []
                for line in chunk:
                    why = line.problem if line.row is None else problem(line.row, settings)
                    if why is None:
                        good.append(line)
                    else:
                        early.append((line.number, why))
                rows_ok = [line.row for line in good if line.row is not None]
                summary.transit_calls += sum(1 for _ in calls(rows_ok))
                records = await make_records(
                    transit, rows_ok, key_version=version, parallel=parallel
                )
                if pending is not None:
                    await pending
                pending = loop.run_in_executor(
                    writer, write, good, records, early, chunk[-1].position
                )
            if pending is not None:
                await pending

    try:
        asyncio.run(run())
    finally:
        writer.shutdown(wait=True)
        store.close()
    summary.seconds = time.monotonic() - started
    return summary


def _chain(first: list[Line], rest: Iterator[Line]) -> Iterator[Line]:
    yield from first
    yield from rest
