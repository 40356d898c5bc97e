"""``ivr-vault serve webhook|backend``: run one service under uvicorn.

:func:`uvicorn_options` is how every service process runs uvicorn; the bench's baseline
takes its options from here too, so both are measured under the same server settings.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from service.settings import Settings, retired_in

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from service.web.health import Drain


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    settings.require(args.role)
    if args.role == "webhook":
        from service.webhook.locales.choice import Localization

        Localization.from_settings(settings)  # catalogs, locales, voices: one line if not
    _warn_retired()
    if args.check:
        print(f"ivr-vault: {args.role} configuration is valid")
        return 0
    if args.role == "webhook":
        host, port = settings.webhook_host, settings.webhook_port
    else:
        host, port = settings.backend_host, settings.backend_port
    workers = settings.web_concurrency
    if workers > 1:
        # Each worker is its own process: it builds its app (Vault login, coalescers,
        # metrics) in its own lifespan through this module's factory. /metrics then
        # answers for the worker that serves the scrape only. uvicorn's supervisor owns
        # the signals here: no drain (SHUTDOWN_DRAIN) before the workers stop.
        factory = WORKER_FACTORIES[args.role]
        uvicorn.run(
            f"{factory.__module__}:{factory.__name__}",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            **uvicorn_options(),
        )
        return 0
    from service.web.draining import DrainingServer
    from service.web.health import Drain

    drain = Drain()
    app = _webhook(settings, drain) if args.role == "webhook" else _backend(settings, drain)
    server = DrainingServer(
        uvicorn.Config(app, host=host, port=port, **uvicorn_options()),
        drain,
        settings.shutdown_drain,
    )
    server.run()
    # As uvicorn.run: a server that never started (its lifespan failed, the port was
    # taken) exits 3.
    return 0 if server.started else 3


def _warn_retired() -> None:
    """Once per start, before any worker: a setting the operator still sets but that no
    longer does anything."""
    import structlog

    for line in retired_in(os.environ):
        structlog.get_logger("ivr.serve").warning("retired setting", detail=line)


def _webhook(settings: Settings, drain: Drain | None = None) -> Starlette:
    from service.webhook.app import create_webhook_app

    return create_webhook_app(settings, drain=drain)


def _backend(settings: Settings, drain: Drain | None = None) -> Starlette:
    from service.backend.app import create_backend_app

    return create_backend_app(settings, drain=drain)


def _worker_settings() -> Settings:
    """In a uvicorn worker process: read the environment and install the log pipeline
    (the scrubber) before anything can log, as main() does for a single process."""
    from service.logs.config import configure_logging

    settings = Settings.from_environ()
    fmt: Literal["json", "console"] = "console" if settings.log_format == "console" else "json"
    configure_logging(
        fmt=fmt,
        level=settings.log_level,
        background=True,
        listen_hosts=frozenset({settings.webhook_host, settings.backend_host}),
    )
    return settings


def webhook_app() -> Starlette:
    """uvicorn factory for ``serve webhook`` with WEB_CONCURRENCY > 1."""
    return _webhook(_worker_settings())


def backend_app() -> Starlette:
    """uvicorn factory for ``serve backend`` with WEB_CONCURRENCY > 1."""
    return _backend(_worker_settings())


# What each worker process imports (uvicorn needs a "module:name" string to start workers).
WORKER_FACTORIES: dict[str, Callable[[], Starlette]] = {
    "webhook": webhook_app,
    "backend": backend_app,
}


def uvicorn_options() -> dict[str, Any]:
    """How every service process (and the bench baseline) runs uvicorn.

    uvloop and httptools are named, not left to "auto", so that a missing extra fails
    loudly instead of silently falling back to the slower asyncio/h11 (bench/RESULTS.md,
    "uvicorn settings"). The number of workers is not here: one by default, more with
    WEB_CONCURRENCY, each then holding its own Vault login, its own coalescer (smaller
    batches) and its own /metrics registry; more processes or replicas scale out too, which
    the stateless call flow allows.

    uvicorn, not granian: granian's p99 was lower, but a whole call cost 17-20 % more CPU
    over all processes, in smaller Transit batches (0.29-0.31 Transit calls per request
    against 0.18-0.19: bench/ab/granian.md, issue 21).
    """
    from service.logs.config import UVICORN_LOG_KWARGS

    return {
        "loop": "uvloop",
        # httptools, with a header size cap and a header deadline (service/web/slow_clients.py)
        "http": "service.web.slow_clients:BoundedHttpToolsProtocol",
        # Caddy drops its idle connections to the webhook after 4 s (proxy/Caddyfile), before
        # this closes them: never a request sent on a connection being closed.
        "timeout_keep_alive": 5,
        # Forwarded headers are judged by the webhook itself against TRUSTED_PROXIES.
        "proxy_headers": False,
        "server_header": False,
        "date_header": False,
        "timeout_graceful_shutdown": 10,
        **UVICORN_LOG_KWARGS,
    }


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run one service")
    p.add_argument("role", choices=("webhook", "backend"))
    p.add_argument("--check", action="store_true", help="validate configuration and exit")
    p.set_defaults(func=_serve)
