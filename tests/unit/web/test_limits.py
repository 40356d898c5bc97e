"""service/web/limits.py: the body deadline and the limit of requests at once, on an ASGI
app driven by hand (no server: the real server's side is
tests/integration/deploy/test_slow_clients.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from service.web import limits
from service.web.limits import BodyLimitMiddleware, ConcurrencyLimitMiddleware


def scope(path: str = "/voice/card") -> Scope:
    return {"type": "http", "method": "POST", "path": path, "headers": []}


async def call(app: Any, scope: Scope, receive: Receive) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = (await receive())["body"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_a_body_that_never_completes_gets_408(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "BODY_TIMEOUT_S", 0.05)

    async def drip() -> Message:  # one byte, then nothing more, ever
        await asyncio.sleep(0.01)
        return {"type": "http.request", "body": b"a", "more_body": True}

    sent = asyncio.run(call(BodyLimitMiddleware(echo, max_bytes=1024), scope(), drip))
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]


def test_a_whole_body_in_time_is_handed_on() -> None:
    async def whole() -> Message:
        return {"type": "http.request", "body": b"Digits=1", "more_body": False}

    sent = asyncio.run(call(BodyLimitMiddleware(echo, max_bytes=1024), scope(), whole))
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"Digits=1"


def test_over_the_limit_the_overflow_answers_and_never_a_5xx() -> None:
    release = asyncio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"served"})

    async def busy(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"goodbye"})

    async def nothing() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def scenario() -> list[bytes]:
        app = ConcurrencyLimitMiddleware(slow, limit=2, prefix="/voice", overflow=busy)
        held = [asyncio.create_task(call(app, scope(), nothing)) for _ in range(2)]
        await asyncio.sleep(0.01)
        third = await call(app, scope(), nothing)  # both slots held: the overflow answers
        other = asyncio.create_task(call(app, scope("/readyz"), nothing))  # not counted
        await asyncio.sleep(0.01)
        release.set()
        answers = [third, *await asyncio.gather(*held), await other]
        assert app.active == 0
        return [sent[1]["body"] for sent in answers]

    assert asyncio.run(scenario()) == [b"goodbye", b"served", b"served", b"served"]
