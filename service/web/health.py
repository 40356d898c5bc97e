"""Liveness, readiness and metrics routes, shared by webhook and backend."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.web.metrics import Metrics

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]

READY_TIMEOUT_S = 2.0


def health_routes(ready: ReadinessCheck, metrics: Metrics) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                checks = await ready()
            metrics.record_readiness(checks)
        except TimeoutError:
            checks = {"timeout": False}
            metrics.record_readiness({})  # nothing confirmed
        ok = all(checks.values())
        return JSONResponse({"status": "ready" if ok else "unavailable", "checks": checks},
                            status_code=200 if ok else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
