"""The shell blocks of README.md and docs/*.md, as a reader would copy them.

Convention (docs/README of the convention: tests/integration/deploy/test_docs_commands.py runs
them). A fenced block whose info string starts with ``sh`` (or ``bash``) is run, in order,
against a ``make run`` stack, in its directory, unless its info string marks it:

- ```` ```sh no-run=REASON ````: not run here, for one of :data:`REASONS`;
- ```` ```sh env=keyadmin ````: run with ``VAULT_ADDR`` and a key-admin ``VAULT_TOKEN`` in
  the environment, as docs/keys.md tells an operator to set them for the bao CLI.

Renderers take the info string's first word as the language and ignore the rest, so the
markers never show. A new block is run by default: a doc edit cannot add a command that no
test runs without saying why here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.repo import ROOT

# Why a block is not run here: each is a fact about this machine or about the block.
REASONS = {
    "compose": "docker compose: no Docker on the machines the tests run on",
    "twilio": "Twilio's API: an account and the network",
    "kubernetes": "a Kubernetes cluster: none on the machines the tests run on",
    "production": "a production Vault, host or secret that a dev stack does not have",
    "blocking": "starts a stack in the foreground (make run, make run-ha) or stops one",
    "suite": "the suite, the linters or the benchmark: longer than a test, or this test",
    "placeholder": "a value only the reader knows (a port make run prints, an account)",
    "writes-checkout": "rewrites a file of the checkout",
}
ENVS = frozenset({"keyadmin"})

_FENCE = re.compile(r"^```[ \t]*(sh|bash)\b([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    text: str
    no_run: str | None  # a key of REASONS, or None: run it
    env: str | None  # a member of ENVS, or None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def parse_markers(info: str) -> dict[str, str]:
    """``" no-run=compose"`` → ``{"no-run": "compose"}``; anything not ``key=value`` is
    an error (a misspelt marker must not silently run, or silently not run, a block)."""
    markers = {}
    for word in info.split():
        key, sep, value = word.partition("=")
        if not sep or key not in ("no-run", "env"):
            raise ValueError(f"unknown marker {word!r}: use no-run=REASON or env=keyadmin")
        markers[key] = value
    return markers


def blocks(path: Path) -> Iterator[Block]:
    text = path.read_text(encoding="utf-8")
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        try:
            markers = parse_markers(match[2])
        except ValueError as exc:
            raise ValueError(f"{path.relative_to(ROOT)}:{line}: {exc}") from None
        no_run, env = markers.get("no-run"), markers.get("env")
        if no_run is not None and no_run not in REASONS:
            raise ValueError(
                f"{path.relative_to(ROOT)}:{line}: no-run={no_run}: not one of {', '.join(REASONS)}"
            )
        if env is not None and env not in ENVS:
            raise ValueError(
                f"{path.relative_to(ROOT)}:{line}: env={env}: not one of {', '.join(sorted(ENVS))}"
            )
        yield Block(path, line, match[3], no_run, env)


def all_blocks() -> list[Block]:
    return [block for path in documents() for block in blocks(path)]
