"""uvicorn's httptools protocol with a header size cap and a header deadline.

For a webhook reached without our proxy (proxy/servers.caddy does the same at the edge).
uvicorn 0.55 with httptools has neither: its keep-alive timer is armed only after a
response, so a client that sends a request line and then a header byte every few seconds
holds the connection forever; and ``h11_max_incomplete_event_size`` is h11's only, so a
32 MB header was read whole (docs/security.md, "slow clients"). Here:

- the request line and headers must arrive within :data:`HEADER_TIMEOUT_S` of the
  connection being made or of the previous answer; otherwise the connection is closed;
- more than :data:`MAX_HEADER_BYTES` received before the headers are complete gets 431 and
  the connection is closed: at most that plus one read (uvloop: 256 KiB) is ever held.

The body's deadline is :class:`service.web.limits.BodyLimitMiddleware`'s. Switching to h11
would give the size cap but not the deadline (its keep-alive timer is armed the same way),
and bench/RESULTS.md ("uvicorn settings") chose httptools for speed: so this subclass.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.web.one_write import one_write_per_response

# Twilio sends its request at once, with about 1 KB of headers; it waits 15 s for an answer.
HEADER_TIMEOUT_S = 10.0
MAX_HEADER_BYTES = 16 * 1024

_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
    b"connection: close\r\n\r\n"
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Give ``uvicorn.Config(http=...)`` this class (by its import path)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._awaiting_headers = True
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if (
            self._awaiting_headers
            and self._header_bytes > MAX_HEADER_BYTES
            and not self.transport.is_closing()
        ):
            self.transport.write(_TOO_LARGE)
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._cancel_header_deadline()
        super().on_headers_complete()
        if self.cycle is not None:
            one_write_per_response(self.cycle)  # service/web/one_write.py: why

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # its headers are in already
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._await_headers()  # the next request on this connection

    def _await_headers(self) -> None:
        self._awaiting_headers = True
        self._header_bytes = 0
        self._cancel_header_deadline()
        self._header_deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._headers_late)

    def _headers_late(self) -> None:
        self._header_deadline = None
        if self._awaiting_headers and not self.transport.is_closing():
            self.transport.close()

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
