"""A request's budget: the seconds it may take, kept as a deadline that the code under the
request reads to bound what it waits for (the webhook: each lookup attempt, and what it
tells the backend it has left; the backend: its store transaction).

A context variable rather than a parameter: the deadline belongs to the request, like the
access line's fields (:mod:`service.web.access_log`), and every handler between the edge
and the client call would otherwise carry it without using it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# What a client tells the service it calls it has left of its budget, in seconds (the
# webhook's lookups; the backend bounds its own work by it).
HEADER = "X-Request-Budget"

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "ivr_request_deadline", default=None
)


@asynccontextmanager
async def within(seconds: float) -> AsyncIterator[None]:
    """Run the block within ``seconds`` (TimeoutError past them), :func:`left` telling
    what remains."""
    deadline = asyncio.get_running_loop().time() + seconds
    token = _DEADLINE.set(deadline)
    try:
        async with asyncio.timeout_at(deadline):
            yield
    finally:
        _DEADLINE.reset(token)


def left() -> float | None:
    """Seconds left of the current request's budget (negative once spent); None outside
    :func:`within`."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - asyncio.get_running_loop().time()
