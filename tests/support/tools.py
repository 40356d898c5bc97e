"""The system tools some integration tests run: Debian packages, which ``.ci/run``
installs. A test that needs one and does not find it fails with one line saying how to
install it. Never skipped: a machine without the tool must not pass the suite by leaving
out the tests that need it."""

from __future__ import annotations

import shutil

import pytest


def require(command: str, package: str) -> str:
    """The path of ``command``; the test fails here when it is not installed."""
    found = shutil.which(command)
    if found is None:
        pytest.fail(
            f"{command} not found: sudo apt-get install {package} (.ci/run installs it)",
            pytrace=False,
        )
    return found
