"""One write per response: the real uvicorn protocol of the services (with our cycle
transport), driven in-process over a transport that records each write."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.server import ServerState

from service.web.slow_clients import BoundedHttpToolsProtocol


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _answer(request: Request) -> Response:
    await request.body()
    return Response("<Response/>", media_type="application/xml")


APP = Starlette(routes=[Route("/voice", _answer, methods=["POST", "HEAD", "GET"])])


async def _exchange(*requests: bytes) -> RecordingTransport:
    config = uvicorn.Config(APP, log_config=None, access_log=False, lifespan="off")
    config.load()
    protocol = BoundedHttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    for request in requests:
        protocol.data_received(request)
        for _ in range(50):
            await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport


POST = b"POST /voice HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"


def test_a_response_is_one_write_head_and_body() -> None:
    transport = asyncio.run(_exchange(POST, POST))
    assert len(transport.writes) == 2  # one per response
    for write in transport.writes:
        head, _, body = write.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 11" in head
        assert body == b"<Response/>"


def test_a_head_request_gets_its_head_at_completion() -> None:
    transport = asyncio.run(_exchange(b"HEAD /voice HTTP/1.1\r\nhost: x\r\n\r\n"))
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 ") and transport.writes[0].endswith(
        b"\r\n\r\n"
    )


@pytest.mark.parametrize("body_first", [True, False])
def test_100_continue_goes_out_before_the_response(body_first: bool) -> None:
    head = b"POST /voice HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n"
    requests = (head + b"abc",) if body_first else (head, b"abc")
    transport = asyncio.run(_exchange(*requests))
    # uvicorn writes the 100 when the app first asks for the body, before any answer.
    assert transport.writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    (response,) = transport.writes[1:]
    assert response.startswith(b"HTTP/1.1 200 OK\r\n") and response.endswith(b"<Response/>")
