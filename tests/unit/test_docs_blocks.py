"""The docs' shell blocks follow tests/support/docblocks.py's convention: each is run by
tests/integration/deploy/test_docs_commands.py or marked with a known reason not to be; a
misspelt marker is an error, never a block silently run or silently left out."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.docblocks import REASONS, all_blocks, blocks, parse_markers


def test_every_block_is_run_or_says_why_not() -> None:
    found = all_blocks()  # raises on an unknown marker or reason
    assert {b.no_run for b in found} - {None} <= set(REASONS)
    assert sum(b.no_run is None for b in found) >= 8  # the runnable ones exist


@pytest.mark.parametrize("info", [" norun=compose", " no-run", " skip", " env"])
def test_a_misspelt_marker_is_an_error(info: str) -> None:
    with pytest.raises(ValueError, match="unknown marker"):
        parse_markers(info)


def test_markers_and_languages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.support.docblocks.ROOT", tmp_path)
    doc = tmp_path / "x.md"
    doc.write_text(
        "```sh\nls\n```\n\n```bash no-run=compose\ndocker compose up\n```\n\n"
        "```sh env=keyadmin\nbao read x\n```\n\n```json\n{}\n```\n"
        "```sh no-run=someday\nx\n```\n"
    )
    with pytest.raises(ValueError, match="no-run=someday: not one of"):
        list(blocks(doc))
    doc.write_text(doc.read_text().rsplit("```sh no-run=someday", 1)[0])
    found = [(b.line, b.text, b.no_run, b.env) for b in blocks(doc)]
    assert found == [
        (1, "ls\n", None, None),
        (5, "docker compose up\n", "compose", None),
        (9, "bao read x\n", None, "keyadmin"),
    ]
