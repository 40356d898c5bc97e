"""What ``ivr-vault accounts list`` and ``accounts import`` print: a listing's lines (a
table, or JSON Lines), and an import's refusals and progress (a bar on a terminal, plain
lines otherwise). Never a digit entry: the store holds none, and a refusal names its line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from service.backend.importing import Summary
from service.store.accounts import AccountSummary

TABLE_HEADER = (
    f"{'account':<24} {'reference':<12} {'identified by':<28} {'lock':<25} "
    f"{'failures':>8} last success"
)
# A plain progress line at most this often when stderr is not a terminal (a log file).
PLAIN_EVERY_S = 5.0
BAR_WIDTH = 30


def _iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def identified_by(summary: AccountSummary) -> list[str]:
    return [
        path
        for path, yes in (("caller", summary.callers > 0), ("account_number", summary.by_number))
        if yes
    ]


def lock(summary: AccountSummary, now: float) -> str:
    if summary.state.hard:
        return "hard-locked"
    if summary.state.locked(now):
        return f"locked until {_iso(summary.state.locked_until)}"
    return "-"


def json_line(summary: AccountSummary, now: float) -> str:
    return json.dumps(
        {
            "account": summary.account,
            "reference": summary.ref,
            "identified_by": identified_by(summary),
            "callers": summary.callers,
            "legacy_card": summary.legacy,
            "locked": summary.state.locked(now),
            "hard_locked": summary.state.hard,
            "failures": summary.state.failures,
            "last_success": _iso(summary.last_success),
        }
    )


def table_line(summary: AccountSummary, now: float) -> str:
    paths = [f"caller ({summary.callers})" if p == "caller" else p for p in identified_by(summary)]
    if summary.legacy:
        paths.append("card only (migrated)")
    return (
        f"{summary.account:<24} {summary.ref:<12} {', '.join(paths) or '-':<28} "
        f"{lock(summary, now):<25} {summary.state.failures:>8} "
        f"{_iso(summary.last_success) or '-'}"
    )


class Reporter:
    """An import's refusals (one line each, by line number) and its progress on stderr."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tty = sys.stderr.isatty()
        try:
            self.size = os.stat(path).st_size
        except OSError:
            self.size = 0
        self._said_at = time.monotonic()
        self._bar = False

    def refuse(self, number: int, why: str) -> None:
        self._clear()
        print(f"ivr-vault: {self.path.name} line {number}: {why}", file=sys.stderr, flush=True)

    def progress(self, summary: Summary, position: int) -> None:
        rate = summary.rows / max(summary.seconds, 1e-9)
        if self.tty:
            done = min(1.0, position / self.size) if self.size else 0.0
            filled = round(done * BAR_WIDTH)
            sys.stderr.write(
                f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
                f"{done:4.0%} {summary.rows:,} rows {rate:,.0f}/s "
            )
            sys.stderr.flush()
            self._bar = True
            return
        now = time.monotonic()
        if now - self._said_at >= PLAIN_EVERY_S:
            self._said_at = now
            print(
                f"ivr-vault: import {self.path.name}: {summary.rows} rows read ({rate:.0f} rows/s)",
                file=sys.stderr,
                flush=True,
            )

    def done(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self._bar:
            sys.stderr.write("\r" + " " * (BAR_WIDTH + 40) + "\r")
            sys.stderr.flush()
            self._bar = False
