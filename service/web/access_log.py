"""One structured access line per HTTP request, replacing uvicorn's (which logs query strings).

Handlers add facts to the current request's line with ``annotate(outcome=..., call_sid=...)``.
The line never carries headers or the query string; everything in it still passes the scrubber.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Final, TypeAlias

import structlog

__all__ = ["ASGIApp", "AccessLogMiddleware", "Message", "Receive", "Scope", "Send", "annotate"]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
"""The ASGI 3 application signature (structurally compatible with starlette.types)."""

# The middleware stores one mutable dict per request. Copied contexts (threadpool endpoints,
# task groups) copy the reference, not the dict, so annotations made there still land here.
_FIELDS: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar(
    "ivr_access_fields", default=None
)

# Names the middleware owns or structlog reserves; an annotation may not overwrite them.
_RESERVED: Final = frozenset(
    {
        "event", "level", "logger", "timestamp", "exc_info", "stack_info", "exception",
        "method", "path", "route", "status_code", "duration_ms", "exc_type",
    }
)  # fmt: skip

_CLIENT_CLOSED: Final = 499  # nginx's convention for "client went away before the answer"


def annotate(**fields: object) -> None:
    """Add *fields* to the access line of the request being handled; outside one, do nothing."""
    current = _FIELDS.get()
    if current is not None:
        current.update(fields)


def _route_template(scope: Scope) -> str | None:
    route_path = getattr(scope.get("route"), "path", None)
    if not isinstance(route_path, str):
        return None
    # Under a Mount the innermost route path is relative; root_path holds the mount prefix
    # on top of the server's own root_path (app_root_path).
    root_path = str(scope.get("root_path", ""))
    app_root = str(scope.get("app_root_path", root_path))
    prefix = root_path[len(app_root) :] if root_path.startswith(app_root) else ""
    return prefix + route_path


class AccessLogMiddleware:
    """ASGI middleware writing one line per HTTP request once the response is done."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        logger_name: str = "ivr.access",
        on_complete: Callable[[str | None, int, Mapping[str, object]], None] | None = None,
    ) -> None:
        self.app = app
        self._logger_name = logger_name
        # Called once per request with (route template or None, status, annotations):
        # the metrics count requests from the very facts the access line shows.
        self._on_complete = on_complete

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return

        fields: dict[str, object] = {}
        token = _FIELDS.set(fields)
        started = time.perf_counter()
        status: int | None = None

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message.get("type") == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        except Exception as exc:
            fields["outcome"] = "error"
            # The type only: an exception's message may quote caller input.
            self._emit(scope, fields, 500, started, exc_type=type(exc).__name__)
            raise
        except BaseException:
            fields["outcome"] = "cancelled"
            self._emit(scope, fields, status or _CLIENT_CLOSED, started)
            raise
        else:
            if status is None:
                fields.setdefault("outcome", "no response")
            self._emit(scope, fields, status or 500, started)
        finally:
            _FIELDS.reset(token)

    def _emit(
        self,
        scope: Scope,
        annotations: dict[str, object],
        status_code: int,
        started: float,
        **extra: object,
    ) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000.0, 3)
        path = str(scope.get("path", ""))  # the ASGI path never includes the query string
        line: dict[str, Any] = {k: v for k, v in annotations.items() if k not in _RESERVED}
        line.update(
            method=str(scope.get("method", "")),
            path=path,
            route=_route_template(scope) or path,
            status_code=status_code,
            duration_ms=duration_ms,
            **extra,
        )
        if self._on_complete is not None:
            self._on_complete(_route_template(scope), status_code, annotations)
        logger = structlog.get_logger(self._logger_name)
        if status_code >= 500:
            logger.error("request", **line)
        else:
            logger.info("request", **line)
