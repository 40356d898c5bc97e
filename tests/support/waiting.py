"""Waiting for a condition in the tests that drive whole topologies (compose as processes,
the failure drills), and timing how long it took."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    check: Callable[[], bool], *, what: str, timeout: float, since: float | None = None
) -> float:
    """Seconds from ``since`` (a ``time.monotonic()``; by default, now) until ``check``
    holds; the test fails when it does not hold within ``timeout`` seconds of ``since``."""
    start = time.monotonic() if since is None else since
    while not check():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout}s"
        time.sleep(0.05)
    return time.monotonic() - start
