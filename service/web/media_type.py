"""The media type a request declares: both services accept exactly one per route."""

from __future__ import annotations

from starlette.requests import HTTPConnection


def media_type(request: HTTPConnection) -> str:
    """``Content-Type`` without its parameters, lower case (``application/json;
    charset=utf-8`` → ``application/json``); empty when there is none."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()
