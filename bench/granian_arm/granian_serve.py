"""The granian arm of bench/ab/granian.md: ``serve webhook|backend`` under granian.

Bench-only (issue 21, item 6). :mod:`sitecustomize` (this directory, put on PYTHONPATH
by ``--env-a``) swaps it in for ``service.cli.serve._serve``; the service itself knows no
granian. What it keeps of the uvicorn arm (service/cli/serve.py, service/web/):

- the same app, built the same way, one process, uvloop;
- the header cap: hyper's read buffer at :data:`~service.web.slow_clients.MAX_HEADER_BYTES`
  (a head that does not fit gets 431), and the header deadline:
  ``header_read_timeout`` = :data:`~service.web.slow_clients.HEADER_TIMEOUT_S`;
- the body's deadline and VOICE_CONCURRENCY: the app's own middleware, unchanged;
- the drain: SIGTERM sets :class:`~service.web.health.Drain` (``/readyz`` 503) and stops
  the server SHUTDOWN_DRAIN seconds later, as service/web/draining.py does; SIGINT or a
  second SIGTERM stops at once;
- logging: granian's own configuration is skipped, so its ``_granian`` lines reach the one
  root handler (the scrubber) like uvicorn's; its access line stays off.

granian runs in embedded mode (``granian.server.embed``): in this process, on this
event loop, so the bench's CPU figure is this process's, as for uvicorn.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import structlog
import uvloop
from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.server import common as granian_common
from granian.server.embed import Server

from service.cli.serve import _backend, _webhook
from service.settings import Settings
from service.web.health import Drain
from service.web.slow_clients import HEADER_TIMEOUT_S, MAX_HEADER_BYTES

log = structlog.get_logger("ivr.serve")


def serve(args: argparse.Namespace, settings: Settings) -> int:
    settings.require(args.role)
    if args.check:
        print(f"ivr-vault: {args.role} configuration is valid")
        return 0
    if settings.web_concurrency > 1:
        raise SystemExit("the granian arm runs one process (WEB_CONCURRENCY=1)")
    if args.role == "webhook":
        host, port = settings.webhook_host, settings.webhook_port
    else:
        host, port = settings.backend_host, settings.backend_port
    drain = Drain()
    app = _webhook(settings, drain) if args.role == "webhook" else _backend(settings, drain)
    # granian's Server() would dictConfig its own handlers (and close ours): skipped.
    granian_common.configure_logging = lambda *a, **k: None
    server = Server(
        app,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,
        websockets=False,
        http1_settings=HTTP1Settings(
            header_read_timeout=int(HEADER_TIMEOUT_S * 1000),
            keep_alive=True,
            max_buffer_size=MAX_HEADER_BYTES,
        ),
        log_access=False,
        runtime_threads=1,
    )
    uvloop.run(_run(server, drain, settings.shutdown_drain, port))
    return 0


async def _run(server: Server, drain: Drain, delay: float, port: int) -> None:
    loop = asyncio.get_running_loop()

    def on_term() -> None:
        if delay <= 0 or drain.draining:
            server.stop()
            return
        drain.draining = True
        log.info("draining before shutdown", seconds=delay)
        loop.call_later(delay, server.stop)

    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGINT, server.stop)
    log.info("granian serving", port=port, pid=os.getpid())
    await server.serve()
