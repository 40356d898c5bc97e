"""Request limits as ASGI middleware: body size and deadline, and requests at once.

A declared ``Content-Length`` over the limit is refused without reading a byte; a
chunked body is read only until it crosses the limit; a body that has not arrived whole
within :data:`BODY_TIMEOUT_S` gets 408 and the connection is closed (it used to wait on
``receive()`` forever: a client sending 1 byte every 5 s held its connection for good,
docs/security.md, "slow clients"). The accepted body is handed on to the app unchanged.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Twilio sends its body (a few hundred bytes) with its headers; it waits 15 s for an answer.
BODY_TIMEOUT_S = 10.0


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _refuse(send, 400)
                    return
                if declared > self.max_bytes:
                    await _refuse(send, 413)
                    return
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                body = await self._read(receive)
        except TimeoutError:
            await _refuse(send, 408)
            return
        if body is None:  # the client left
            return
        if len(body) > self.max_bytes:
            await _refuse(send, 413)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or as much of it as crosses the limit; None when the client
        left."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if size > self.max_bytes:
                return b"".join(chunks)
            if not message.get("more_body", False):
                return b"".join(chunks)


class ConcurrencyLimitMiddleware:
    """At most ``limit`` requests under ``prefix`` handled at once; the others get
    ``overflow``'s answer at once. (uvicorn's ``limit_concurrency`` answers 503, which
    Twilio reads out to the caller as an application error.) Placed inside
    :class:`BodyLimitMiddleware`, so a client still sending its body holds no slot."""

    def __init__(self, app: ASGIApp, *, limit: int, prefix: str, overflow: ASGIApp) -> None:
        self.app = app
        self.limit = limit
        self.prefix = prefix
        self.overflow = overflow
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            await self.overflow(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


async def _refuse(send: Send, status: int) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", b"0"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": b""})
