"""One write per response, not two.

uvicorn's httptools cycle writes a response's status line and headers as soon as the app
sends ``http.response.start``, and its body at ``http.response.body``: two transport writes,
which uvloop sends at once, each a ``send()`` system call and a TCP segment that wakes the
client. Under the card step the head's write was 13.9 % of the webhook's event-loop thread
and the body's 3.0 % (bench/profiles/webhook-before.md). Here the head is held and goes
out with the body's first write: one system call, one segment.

Nothing waits for it: Starlette's responses send the body right after the head. A head
with no body write after it (a HEAD request) goes out when the response completes; a
close writes what is held first; a ``100 Continue`` (written before the response starts)
passes at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle


class HeadWithBody:
    """The transport a response cycle writes through (the real one underneath)."""

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head_seen = False
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held + bytes(data))
        elif not self._head_seen and self._cycle.response_started:
            self._head_seen = True  # the cycle's first write once started: the head
            self._held = bytes(data)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def one_write_per_response(cycle: RequestResponseCycle) -> None:
    """Make ``cycle`` (just created, its app not yet running) write its head with its body."""
    if isinstance(cycle.transport, HeadWithBody):
        return  # already (the protocol keeps its last cycle when no new one was made)
    corked = HeadWithBody(cycle.transport, cycle)
    cycle.transport = corked  # type: ignore[assignment]  # a Transport to the cycle
    on_response = cycle.on_response

    def completed() -> None:
        corked.flush()  # a head with no body (HEAD) goes out now
        on_response()

    cycle.on_response = completed
