"""The account backend: the only component that decrypts.

``POST /v1/lookup`` takes the two ciphertexts of a call, decrypts them in one Transit
batch, HMACs them with ``ivr-lookup`` and finds the account by the card verifier, then
compares the PIN verifier in constant time. The store holds verifiers, never digits.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.backend.schema import OPENAPI, LookupRequest, SchemaError, parse_lookup
from service.errors import DecryptionError, IvrVaultError, VaultError
from service.settings import Settings
from service.store.accounts import (
    Found,
    Lockout,
    Settlement,
    Store,
    card_input,
    pin_input,
    verifier_version,
)
from service.vault.session import freeze_startup_heap, transit_session
from service.vault.transit import Transit, call_context, ciphertext_version
from service.web.access_log import AccessLogMiddleware, annotate
from service.web.health import health_routes
from service.web.limits import BodyLimitMiddleware
from service.web.metrics import Metrics

log = structlog.get_logger("ivr.backend")

T = TypeVar("T")

IDEMPOTENCY_TTL_S = 15 * 60
NOT_FOUND: dict[str, Any] = {"detail": "not found"}
LOCKED: dict[str, Any] = {"detail": "locked"}


@dataclass
class BackendState:
    settings: Settings
    transit: Transit
    store: Store
    metrics: Metrics
    executor: ThreadPoolExecutor

    async def db(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)


def _error(status: int, detail: object) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _authorized(request: Request, settings: Settings) -> bool:
    token = settings.backend_token
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if token is None or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.reveal().encode())


def _four_digits(value: bytes) -> str | None:
    text = value.decode("ascii", "replace")
    return text if len(text) == 4 and text.isascii() and text.isdigit() else None


async def _verifiers(state: BackendState, last4: str, pin: str,
                     key_version: int | None = None) -> tuple[str, str]:
    card_v, pin_v = await state.transit.hmac([card_input(last4), pin_input(last4, pin)],
                                             key_version=key_version)
    return card_v, pin_v


async def _find(state: BackendState, last4: str, pin: str,
                ) -> tuple[Found | None, str, tuple[str, str]]:
    """Find the account at the latest ``ivr-lookup`` version, then at older versions still
    in the store. Returns (account and its lock state, its PIN verifier at its version,
    latest verifiers)."""
    latest = await _verifiers(state, last4, pin)
    found = await state.db(state.store.find, latest[0], time.time())
    if found is not None:
        return found, latest[1], latest
    latest_version = verifier_version(latest[0])
    for version in await state.db(state.store.lookup_versions):
        if version >= latest_version:
            continue
        older = await _verifiers(state, last4, pin, key_version=version)
        found = await state.db(state.store.find, older[0], time.time())
        if found is not None:
            return found, older[1], latest
    return None, "", latest


async def _settle(state: BackendState, request_key: str | None, status: int,
                  body: dict[str, Any], now: float, **writes: Any) -> bool:
    """Write what this answer implies (and the answer itself, for a retry of the same
    request) in one transaction on one pool hop; none when there is nothing to write.
    Returns True when a wrong PIN locked the account."""
    answer = (status, json.dumps(body)) if request_key else None
    settlement = Settlement(now, request_key=request_key, answer=answer,
                            answer_ttl=IDEMPOTENCY_TTL_S, **writes)
    if settlement.is_empty():
        return False
    return await state.db(state.store.settle, settlement)


async def lookup(state: BackendState, request: LookupRequest,
                 request_key: str | None = None) -> tuple[int, dict[str, Any]]:
    settings = state.settings
    try:
        card_pt, pin_pt = await state.transit.decrypt([
            (request.card_last4, call_context(request.call_sid, "card_last4")),
            (request.pin, call_context(request.call_sid, "pin")),
        ])
    except DecryptionError:
        annotate(outcome="undecryptable", card_version=ciphertext_version(request.card_last4))
        return 422, {"detail": "ciphertext could not be decrypted for this call"}
    last4, pin = _four_digits(card_pt), _four_digits(pin_pt)
    if last4 is None or pin is None:
        return 422, {"detail": "decrypted values are not 4-digit entries"}

    found, pin_verifier, latest = await _find(state, last4, pin)
    now = time.time()
    if found is None:
        await _settle(state, request_key, 404, NOT_FOUND, now)
        return 404, NOT_FOUND
    account = found.account
    if found.locked:
        await _settle(state, request_key, 423, LOCKED, now)
        return 423, LOCKED
    if not hmac.compare_digest(pin_verifier.encode(), account.pin_verifier.encode()):
        lockout = Lockout(settings.lockout_window, settings.lockout_threshold,
                          settings.lockout_duration)
        if await _settle(state, request_key, 404, NOT_FOUND, now,
                         failed_account=account.id, lockout=lockout):
            state.metrics.lockouts.inc()
            log.warning("card locked after repeated wrong PINs", lookup_version=None)
        return 404, NOT_FOUND
    body = {"account": account.account, "balance": account.balance}
    upgrade = None
    if account.lookup_version < verifier_version(latest[0]):
        upgrade = (account.id, *latest)
        annotate(verifier_upgraded=True)
    await _settle(state, request_key, 200, body, now, upgrade=upgrade,
                  cleared_account=account.id if found.has_failures else None)
    return 200, body


async def lookup_endpoint(request: Request) -> Response:
    state: BackendState = request.app.state.backend
    if not _authorized(request, state.settings):
        annotate(outcome="unauthorized")
        return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return _error(415, "expected application/json")
    try:
        parsed = parse_lookup(await request.body())
    except SchemaError as exc:
        annotate(outcome="invalid")
        return _error(422, exc.problems)
    annotate(call_sid=parsed.call_sid, key_version=ciphertext_version(parsed.card_last4))

    key = request.headers.get("idempotency-key")
    if key is not None and (len(key) > 200 or not key.isascii()):
        return _error(422, [{"loc": "header:Idempotency-Key", "msg": "invalid"}])
    request_key = f"{parsed.call_sid}|{key}" if key else None
    if request_key:
        remembered = await state.db(state.store.remembered, request_key,
                                    time.time(), IDEMPOTENCY_TTL_S)
        if remembered is not None:
            annotate(outcome="replayed")
            status, saved = remembered
            return JSONResponse(json.loads(saved), status_code=status)
    try:
        status, body = await lookup(state, parsed, request_key)
    except VaultError as exc:
        state.metrics.vault_errors.labels(exc.kind).inc()
        annotate(outcome="vault_unavailable", error_kind=exc.kind)
        return _error(503, "vault unavailable")
    outcome = {200: "found", 404: "not_found", 423: "locked", 422: "rejected"}.get(status)
    state.metrics.lookups.labels(outcome or "error").inc()
    annotate(outcome=outcome)
    return JSONResponse(body, status_code=status)


async def openapi_endpoint(request: Request) -> Response:
    return JSONResponse(OPENAPI)


def create_backend_app(settings: Settings) -> Starlette:
    settings.require("backend")
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = Store(settings.store_path)
        try:
            async with transit_session(settings, metrics) as transit:
                # SQLite work shares the Vault client's pool: both are short blocking calls.
                app.state.backend = BackendState(settings, transit, store, metrics,
                                                 transit.executor)
                freeze_startup_heap()
                yield
        finally:
            store.close()

    async def ready() -> dict[str, bool]:
        state: BackendState = app.state.backend
        try:
            await state.transit.hmac([b"readyz:probe"])
            return {"vault": True}
        except IvrVaultError:
            return {"vault": False}

    routes = [
        Route("/v1/lookup", lookup_endpoint, methods=["POST"]),
        Route("/openapi.json", openapi_endpoint, methods=["GET"]),
        *health_routes(ready, metrics),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLogMiddleware, on_complete=metrics.count_request)
    return app
