"""AccessLogMiddleware against a tiny real Starlette app, through httpx's ASGITransport."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import httpx
import pytest
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from service.logs.scrubbing import ALLOWED_FIELDS, ciphertext_fields
from service.web.access_log import AccessLogMiddleware, Message, Receive, Scope, Send, annotate
from tests.support.digits import GOOD_SID, assert_no_digits

CIPHERTEXT = "vault:v2:c2VjcmV0IDEyMzQ="


async def item(request: Request) -> Response:
    annotate(outcome="found", call_sid=GOOD_SID, **ciphertext_fields(CIPHERTEXT))
    return JSONResponse({"id": request.path_params["item_id"]})


def sync_item(request: Request) -> Response:
    # Runs in a worker thread with a copy of the context: the annotation must still land.
    annotate(outcome="sync", status_code=999, method="FORGED")
    return PlainTextResponse("ok")


async def boom(request: Request) -> Response:
    annotate(call_sid=GOOD_SID)
    raise RuntimeError("pin 4321")


async def step(request: Request) -> Response:
    return PlainTextResponse(request.path_params["step"])


async def teapot(request: Request) -> Response:
    raise HTTPException(status_code=418)


def make_app() -> Starlette:
    routes = [
        Route("/items/{item_id}", item),
        Route("/sync", sync_item),
        Route("/boom", boom, methods=["POST"]),
        Route("/teapot", teapot),
        Mount("/voice", routes=[Route("/card/{step}", step, methods=["POST"])]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(AccessLogMiddleware)])


def access_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in stream.getvalue().splitlines()]
    for obj in parsed:
        assert_no_digits(obj, ALLOWED_FIELDS)
    return [obj for obj in parsed if obj.get("logger") == "ivr.access"]


async def request(app: Any, method: str, url: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, url, **kwargs)


@pytest.mark.anyio
async def test_one_line_per_request_without_query_or_headers(pipeline: io.StringIO) -> None:
    app = make_app()
    response = await request(
        app, "GET", "/items/1234?card=5678&Digits=9012", headers={"X-Twilio-Signature": "zebra"}
    )
    assert response.status_code == 200
    await request(app, "GET", "/sync")
    text = pipeline.getvalue()
    assert "card=" not in text and "Digits" not in text and "zebra" not in text
    first, second = access_lines(pipeline)
    assert first["method"] == "GET"
    assert first["path"] == "/items/****"
    assert first["route"] == "/items/{item_id}"
    assert first["status_code"] == 200
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert first["outcome"] == "found" and first["call_sid"] == GOOD_SID
    assert first["key_version"] == 2 and first["ct_fp"] == ciphertext_fields(CIPHERTEXT)["ct_fp"]
    assert first["event"] == "request" and first["level"] == "info"
    # annotations from a thread-pool endpoint land, but cannot overwrite the middleware's fields
    assert second["outcome"] == "sync"
    assert second["status_code"] == 200 and second["method"] == "GET"


@pytest.mark.anyio
async def test_route_template_under_a_mount(pipeline: io.StringIO) -> None:
    await request(make_app(), "POST", "/voice/card/first?card=vault:v1:x")
    (line,) = access_lines(pipeline)
    assert line["path"] == "/voice/card/first" and line["route"] == "/voice/card/{step}"


@pytest.mark.anyio
async def test_unrouted_and_http_exception_statuses(pipeline: io.StringIO) -> None:
    app = make_app()
    assert (await request(app, "GET", "/nowhere/12")).status_code == 404
    assert (await request(app, "GET", "/teapot")).status_code == 418
    missing, teapot_line = access_lines(pipeline)
    assert missing["status_code"] == 404 and missing["route"] == "/nowhere/**"
    assert teapot_line["status_code"] == 418 and teapot_line["route"] == "/teapot"


@pytest.mark.anyio
async def test_an_exception_is_logged_as_500_and_reraised(pipeline: io.StringIO) -> None:
    with (
        structlog.testing.capture_logs() as captured,
        pytest.raises(RuntimeError, match="pin 4321"),
    ):
        await request(make_app(), "POST", "/boom")
    (entry,) = [e for e in captured if e["event"] == "request"]
    assert entry["status_code"] == 500 and entry["outcome"] == "error"
    assert entry["exc_type"] == "RuntimeError" and entry["log_level"] == "error"
    assert entry["call_sid"] == GOOD_SID
    assert "4321" not in repr(entry)  # the type name only, never the message

    with pytest.raises(RuntimeError):
        await request(make_app(), "POST", "/boom")
    (line,) = access_lines(pipeline)
    assert line["status_code"] == 500 and line["exc_type"] == "RuntimeError"
    assert "exception" not in line


@pytest.mark.anyio
async def test_raw_asgi_app_cancelled_and_silent_paths(pipeline: io.StringIO) -> None:
    async def cancelled(scope: Scope, receive: Receive, send: Send) -> None:
        raise asyncio.CancelledError

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        return None

    scope: Scope = {"type": "http", "method": "GET", "path": "/x", "query_string": b"pin=1"}

    with pytest.raises(asyncio.CancelledError):
        await AccessLogMiddleware(cancelled, logger_name="ivr.access")(scope, receive, send)
    await AccessLogMiddleware(silent)(scope, receive, send)
    await AccessLogMiddleware(silent)({"type": "lifespan"}, receive, send)
    cancelled_line, silent_line = access_lines(pipeline)
    assert cancelled_line["outcome"] == "cancelled" and cancelled_line["status_code"] == 499
    assert silent_line["outcome"] == "no response" and silent_line["status_code"] == 500


@pytest.mark.anyio
async def test_annotate_outside_a_request_is_a_no_op(pipeline: io.StringIO) -> None:
    annotate(outcome="nothing")
    await request(make_app(), "GET", "/sync")
    (line,) = access_lines(pipeline)
    assert line["outcome"] == "sync"
