"""The account backend's HTTP edge: the only component that decrypts.

``POST /v1/lookup`` is checked here (bearer token, media type, schema, idempotency key);
the decision itself is :mod:`service.backend.lookup`'s. Its outcome becomes an HTTP
status and body in one table, :data:`ANSWERS`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.backend.decision import LookupOutcome, LookupResult
from service.backend.keycheck import LookupKeys
from service.backend.lookup import Lookup
from service.backend.policy import LockKind
from service.backend.schema import OPENAPI, LookupRequest, parse_lookup
from service.errors import (
    IvrVaultError,
    SchemaError,
    StoreError,
    StoreUnavailable,
    VaultError,
)
from service.formats import ciphertext_version
from service.settings import Settings
from service.step_time import issued_is_fresh
from service.store.accounts import Store
from service.store.ledger import Answer
from service.vault import session
from service.vault.session import TransitSession, freeze_startup_heap
from service.web import budget
from service.web.access_log import AccessLogMiddleware, annotate
from service.web.health import Drain, health_routes
from service.web.limits import BodyLimitMiddleware
from service.web.media_type import media_type
from service.web.metrics import Metrics

log = structlog.get_logger("ivr.backend")

# A lookup's outcome → (HTTP status, ``detail``); FOUND's body is the account instead.
# (docs/architecture.md, steps 15-17; the webhook reads these statuses back in its own
# table, webhook/app.py BACKEND_ANSWERS.)
ANSWERS: Final[Mapping[LookupOutcome, tuple[int, str | None]]] = {
    LookupOutcome.FOUND: (200, None),
    LookupOutcome.NOT_FOUND: (404, "not found"),
    LookupOutcome.LOCKED: (423, "locked"),
    LookupOutcome.CALLER_CUT_OFF: (429, "too many failed lookups from this caller"),
    LookupOutcome.SECOND_LOOKUP: (409, "this call already had its lookup"),
    LookupOutcome.UNDECRYPTABLE: (422, "ciphertext could not be decrypted for this call"),
    LookupOutcome.MALFORMED: (
        422,
        "decrypted values are not entries of the expected number of digits",
    ),
}


def http_answer(result: LookupResult) -> tuple[int, dict[str, Any]]:
    status, detail = ANSWERS[result.outcome]
    if detail is None:
        return status, {"account": result.account, "balance": result.balance}
    return status, {"detail": detail}


def _error(status: int, detail: object) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def request_budget(request: Request, settings: Settings) -> float:
    """The seconds this lookup may take: what the webhook says it has left, at most this
    backend's own REQUEST_BUDGET (a missing or unreadable header: that)."""
    raw = request.headers.get(budget.HEADER, "")
    try:
        given = float(raw) if len(raw) <= 16 else math.nan
    except ValueError:
        given = math.nan
    if math.isnan(given):
        return settings.request_budget
    return min(max(given, 0.0), settings.request_budget)


def _authorized(request: Request, settings: Settings) -> bool:
    token = settings.backend_token
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if token is None or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.reveal().encode())


async def lookup_endpoint(request: Request) -> Response:
    lookup: Lookup = request.app.state.lookup
    if not _authorized(request, lookup.settings):
        annotate(outcome="unauthorized")
        return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
    if media_type(request) != "application/json":
        return _error(415, "expected application/json")
    try:
        parsed = parse_lookup(await request.body())
    except SchemaError as exc:
        annotate(outcome="invalid")
        return _error(422, exc.problems)
    annotate(call_sid=parsed.call_sid, key_version=ciphertext_version(parsed.card_last4))
    # A step older than this backend remembers a call's answers (CALL_MAX_AGE) would be
    # decided afresh, its first answer forgotten: refused, whatever the webhook's
    # STEP_MAX_AGE says (the webhook checks its own; doctor compares the two).
    if not issued_is_fresh(parsed.issued, time.time(), lookup.answer_ttl):
        annotate(outcome="step_expired")
        return _error(410, "this PIN step is older than CALL_MAX_AGE")

    key = request.headers.get("idempotency-key") or None
    if key is not None and (len(key) > 200 or not key.isascii()):
        return _error(422, [{"loc": "header:Idempotency-Key", "msg": "invalid"}])
    seconds = request_budget(request, lookup.settings)
    # Past the budget the webhook has stopped waiting: nothing this backend decides after
    # it reaches the caller, so it stops waiting too (for Vault; the store's transaction
    # has its own limit from the same deadline, lookup.py) and frees what it holds.
    try:
        async with budget.within(seconds):
            return await _decide(lookup, parsed, key)
    except TimeoutError:
        annotate(outcome="budget_spent", budget_ms=round(seconds * 1000))
        return _error(503, "request budget spent")


# Outcomes reached before the decision's transaction: a retry that reaches one of these
# looks for its remembered answer on its own (see _decide).
_BEFORE_THE_STORE = frozenset({LookupOutcome.UNDECRYPTABLE, LookupOutcome.MALFORMED})


async def _decide(lookup: Lookup, parsed: LookupRequest, key: str | None) -> Response:
    """The decision's transaction reads the call's remembered answers first
    (decision.py, step 1), so a retry is answered there: one hop to the store's threads
    per lookup, not a read before Vault and the transaction after. Only a lookup that
    never reaches that transaction (Vault cannot answer, the entries no longer decrypt)
    reads its remembered answer on its own, so a retry still gets the answer it was
    given, whatever Vault does now."""
    try:
        # A "not found" is only an answer when this Vault can reproduce the store's
        # verifiers (keycheck.py); otherwise the caller hears "please call again later".
        if lookup.keys is not None and not await lookup.keys.usable():
            return await _vault_unavailable(lookup, parsed, key, "lookup_key")
        decision = await lookup(parsed, http_answer, key)
    except VaultError as exc:
        lookup.metrics.vault_errors.labels(exc.kind).inc()
        return await _vault_unavailable(lookup, parsed, key, exc.kind)
    except StoreUnavailable:
        # Nothing was decided, or it did not commit: a retry (on another replica) decides.
        annotate(outcome="store_unavailable")
        return _error(503, "store unavailable")
    if decision.replayed is not None:  # the same request, answered before
        return _replayed(decision.replayed)
    result = decision.result
    assert result is not None
    if result.outcome in _BEFORE_THE_STORE:
        remembered = await _remembered(lookup, parsed, key)
        if remembered is not None:
            return _replayed(remembered)
    lookup.metrics.lookups.labels(result.outcome.value).inc()
    annotate(outcome=result.outcome.value)
    status, body = http_answer(result)
    return JSONResponse(body, status_code=status)


async def _vault_unavailable(
    lookup: Lookup, parsed: LookupRequest, key: str | None, kind: str
) -> Response:
    remembered = await _remembered(lookup, parsed, key)
    if remembered is not None:
        return _replayed(remembered)
    annotate(outcome="vault_unavailable", error_kind=kind)
    return _error(503, "vault unavailable")


async def _remembered(lookup: Lookup, parsed: LookupRequest, key: str | None) -> Answer | None:
    """The answer this very request was given, read outside any transaction, if any (a
    store that cannot answer either: none, and the request's own failure stands)."""
    if key is None:
        return None
    try:
        return await lookup.remembered(parsed.call_sid, key)
    except StoreUnavailable:
        return None


def _replayed(answer: Answer) -> Response:
    annotate(outcome="replayed")
    status, saved = answer
    return JSONResponse(json.loads(saved), status_code=status)


def _card_only(settings: Settings, store: Store) -> bool:
    """LEGACY_CARD_LOOKUP as this backend applies it: ``auto`` is on while the store holds
    accounts migrated without an account number (counted once, at start-up)."""
    if settings.legacy_card_lookup != "auto":
        return settings.legacy_card_lookup == "on"
    remaining = store.legacy_accounts()
    if remaining:
        log.info("card-only lookup on for migrated accounts", legacy_accounts=remaining)
    return remaining > 0


async def openapi_endpoint(request: Request) -> Response:
    return JSONResponse(OPENAPI)


def create_backend_app(
    settings: Settings,
    *,
    transit_session: TransitSession = session.transit_session,
    drain: Drain | None = None,
) -> Starlette:
    """The backend app. ``transit_session`` is the seam the unit tests use for a fake
    Transit; the default is Vault. ``drain``: set by the server on SIGTERM, it turns
    /readyz to 503."""
    settings.require("backend")
    metrics = Metrics()
    metrics.initialise(metrics.lookups, [outcome.value for outcome in LookupOutcome])
    metrics.initialise(metrics.lockouts, [kind.value for kind in LockKind])

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # A connection for each thread that may run store work (PostgreSQL).
        store = Store(settings.store, pool_size=session.THREADS, serving=True)
        try:
            async with transit_session(settings, metrics) as transit:
                # Store work shares the Vault client's pool: both are short blocking calls.
                keys = LookupKeys(transit, store, transit.executor, settings.lookup_key)
                try:
                    await keys.check()  # a mismatch: one error line, and never ready
                except VaultError as exc:
                    log.warning(
                        "ivr-lookup canaries not checked at start-up; will check "
                        "before the first lookup",
                        kind=exc.kind,
                    )
                card_only = await asyncio.get_running_loop().run_in_executor(
                    transit.executor, _card_only, settings, store
                )
                app.state.lookup = Lookup(
                    settings,
                    transit,
                    store,
                    metrics,
                    transit.executor,
                    keys=keys,
                    card_only=card_only,
                )
                freeze_startup_heap()
                yield
        finally:
            store.close()

    async def ready() -> dict[str, bool]:
        """Vault answers an HMAC with the lookup key, and reproduces the store's canaries:
        ``{"vault": true, "ivr-lookup": false}`` is a Vault that is up but not the one
        (or not the data) that made the store's verifiers."""
        lookup: Lookup = app.state.lookup
        assert lookup.keys is not None
        try:
            check = await lookup.keys.check()
        except StoreError:
            return {"store": False}
        except IvrVaultError:
            return {"vault": False}
        return {"vault": True, check.key: check.ok}

    routes = [
        Route("/v1/lookup", lookup_endpoint, methods=["POST"]),
        Route("/openapi.json", openapi_endpoint, methods=["GET"]),
        *health_routes(ready, metrics, drain, limits={"call_max_age_s": settings.call_max_age}),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLogMiddleware, on_complete=metrics.count_request)
    return app
