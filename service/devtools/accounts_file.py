"""Generated accounts for ``accounts import``: a file of N test accounts (the tests' and
the bench's). Deterministic, streamed to disk (a million rows in a few seconds), every row
valid: letters-only labels, distinct account numbers, PINs enrolment accepts, and with
``callers`` one distinct registered number per account. Test digits, never a customer's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from service.backend.importing import HEADER
from service.backend.pin_rules import weakness

FIRST_NUMBER = 20_000_000


def label(i: int) -> str:
    """A letters-only label (``GEN`` + i in base 26)."""
    letters = ""
    while True:
        i, digit = divmod(i, 26)
        letters = chr(65 + digit) + letters
        if i == 0:
            return "GEN" + letters.rjust(6, "A")


def pin(i: int) -> str:
    candidate = (i * 7_919 + 2_749) % 10_000
    while weakness(f"{candidate:04d}") is not None:
        candidate = (candidate + 1) % 10_000
    return f"{candidate:04d}"


def row(i: int, *, callers: bool = True) -> tuple[str, str, str, str, str, list[str]]:
    return (
        label(i),
        f"{i % 1000}.{i % 100:02d}",
        f"{FIRST_NUMBER + i:08d}",
        f"{(i * 37) % 10_000:04d}",
        pin(i),
        [f"+1555{i:07d}"] if callers else [],
    )


def rows(
    count: int,
    *,
    start: int = 0,
    callers: bool = True,
) -> Iterator[tuple[str, str, str, str, str, list[str]]]:
    return (row(i, callers=callers) for i in range(start, start + count))


def write(path: Path, count: int, *, start: int = 0, callers: bool = True) -> Path:
    """``count`` accounts into ``path`` (``.csv`` or ``.jsonl``, by its suffix)."""
    with path.open("w", encoding="utf-8", newline="") as out:
        if path.suffix == ".csv":
            out.write(",".join(HEADER) + "\n")
            for r in rows(count, start=start, callers=callers):
                out.write(",".join((*r[:5], ";".join(r[5]))) + "\n")
        else:
            for r in rows(count, start=start, callers=callers):
                out.write(json.dumps(dict(zip(HEADER, r, strict=True))) + "\n")
    return path
