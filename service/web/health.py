"""Liveness, readiness and metrics routes, shared by webhook and backend."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.web.metrics import Metrics

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]

READY_TIMEOUT_S = 2.0


@dataclass
class Drain:
    """Set when the service was told to stop (SIGTERM, service/cli/serve.py): ``/readyz``
    answers 503 from then on, while requests are still served, so that a load balancer's
    health check takes this replica out before it stops accepting connections."""

    draining: bool = False


def health_routes(
    ready: ReadinessCheck,
    metrics: Metrics,
    drain: Drain | None = None,
    limits: Mapping[str, float] | None = None,
) -> list[Route]:
    """``limits``: settings another component must agree with, shown in ``/readyz``
    (``doctor`` compares the webhook's STEP_MAX_AGE with each backend's CALL_MAX_AGE)."""
    shown = {"limits": dict(limits)} if limits else {}

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if drain is not None and drain.draining:
            return JSONResponse(
                {"status": "draining", "checks": {"draining": False}}, status_code=503
            )
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                checks = await ready()
            metrics.record_readiness(checks)
        except TimeoutError:
            checks = {"timeout": False}
            metrics.record_readiness({})  # nothing confirmed
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "unavailable", "checks": checks, **shown},
            status_code=200 if ok else 503,
        )

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
