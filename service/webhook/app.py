"""The Twilio-facing webhook: /voice → /voice/card → /voice/pin.

Each entry is encrypted by Transit the moment it arrives, with a context that binds it
to this call and this field; from then on only ciphertext moves. A ``/voice*`` route
answers valid TwiML or an empty 4xx, never a 5xx: Twilio would read "an application
error has occurred" to the caller.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.errors import BackendUnavailable, IvrVaultError, VaultError, WebhookRefused
from service.logs.scrubbing import ciphertext_fields
from service.settings import Settings
from service.vault import session
from service.vault.formats import ciphertext_version
from service.vault.session import TransitSession, freeze_startup_heap
from service.vault.transit import Transit, call_context
from service.web.access_log import AccessLogMiddleware, annotate
from service.web.health import Drain, health_routes
from service.web.limits import BodyLimitMiddleware, ConcurrencyLimitMiddleware
from service.web.metrics import Metrics
from service.webhook import twiml
from service.webhook.backend_client import BackendClient, BackendSession, http_backend
from service.webhook.twilio_request import TwilioForm, verified_form

log = structlog.get_logger("ivr.webhook")

# Twilio waits 15 s; a caller should not. Past this the caller hears a calm goodbye.
REQUEST_BUDGET_S = 2.5

# The webhook's view of the backend's answers (DESIGN §3): status → (outcome, what the
# caller hears). A 200 is read apart, its body carries the account; any other status, and
# no answer at all, is the backend's failure: the caller is asked to call again later.
BACKEND_ANSWERS: Final[Mapping[int, tuple[str, str]]] = {
    404: ("not_found", twiml.NOT_FOUND),
    # Locked card, caller number cut off, a second lookup in one call: the caller hears what
    # a wrong PIN hears, so that none of them is an oracle.
    423: ("locked", twiml.NOT_FOUND),
    429: ("caller_cut_off", twiml.NOT_FOUND),
    409: ("second_lookup", twiml.NOT_FOUND),
    422: ("ciphertext_rejected", twiml.CALL_AGAIN),
    410: ("step_expired", twiml.CALL_AGAIN),  # older than the backend's CALL_MAX_AGE
}
BACKEND_FAILED: Final = ("backend_error", twiml.TRY_LATER)


@dataclass
class WebhookState:
    settings: Settings
    transit: Transit
    backend: BackendClient
    metrics: Metrics


Handler = Callable[[WebhookState, TwilioForm], Awaitable[str]]


def _twiml(body: str) -> Response:
    return Response(body, media_type="application/xml")


def _attempt(form: TwilioForm) -> int:
    raw = form.query.get("attempt", "1")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 3 else 1


async def voice(state: WebhookState, form: TwilioForm) -> str:
    annotate(outcome="prompted")
    return twiml.gather(twiml.ASK_CARD, twiml.action_url("/voice/card"))


def _retry_or_goodbye(state: WebhookState, form: TwilioForm, prompt: str,
                      action: Callable[[int], str]) -> str:
    """Ask again, posting to ``action(next attempt)``; after MAX_ATTEMPTS, goodbye."""
    attempt = _attempt(form)
    if attempt >= state.settings.max_attempts:
        annotate(outcome="too_many_tries", attempt=attempt)
        return twiml.say_and_hang_up(twiml.TOO_MANY_TRIES)
    annotate(outcome="reprompted", attempt=attempt)
    return twiml.gather(prompt, action(attempt + 1), preface=twiml.RETRY)


async def card(state: WebhookState, form: TwilioForm) -> str:
    call_sid = form.call_sid
    assert call_sid is not None  # checked by the dispatcher
    digits = form.digits()
    if digits is None:
        return _retry_or_goodbye(state, form, twiml.ASK_CARD,
                                 lambda n: twiml.action_url("/voice/card", attempt=n))
    encrypted = await state.transit.encrypt(digits.encode(), call_context(call_sid, "card_last4"))
    annotate(outcome="card_encrypted", **ciphertext_fields(encrypted.ciphertext))
    return twiml.gather(twiml.ASK_PIN, _pin_action(encrypted.ciphertext))


def _pin_action(card_ct: str, **query: str | int) -> str:
    """The PIN step's action URL: the card ciphertext and the time it was issued, both
    covered by Twilio's signature of the request that comes back."""
    return twiml.action_url("/voice/pin", card=card_ct, issued=int(time.time()), **query)


async def pin(state: WebhookState, form: TwilioForm) -> str:
    call_sid = form.call_sid
    assert call_sid is not None
    card_ct = form.query.get("card", "")
    if "?card" in form.duplicated or ciphertext_version(card_ct) is None:
        annotate(outcome="bad_card_ciphertext")
        return twiml.say_and_hang_up(twiml.CALL_AGAIN)
    # A replay of a captured request, once older than STEP_MAX_AGE, ends here: it never
    # reaches the backend, whose memory of the call outlasts this limit.
    if not form.step_is_fresh(time.time(), state.settings.step_max_age):
        annotate(outcome="step_expired")
        return twiml.say_and_hang_up(twiml.CALL_AGAIN)
    digits = form.digits()
    if digits is None:
        return _retry_or_goodbye(state, form, twiml.ASK_PIN,
                                 lambda n: _pin_action(card_ct, attempt=n))
    # The caller's number goes to the backend encrypted, like the entries: it is personal
    # data, and the backend keeps only its keyed HMAC.
    encrypted, caller = await asyncio.gather(
        state.transit.encrypt(digits.encode(), call_context(call_sid, "pin")),
        state.transit.encrypt(form.caller.encode(), call_context(call_sid, "caller")))
    annotate(**ciphertext_fields(encrypted.ciphertext))
    try:
        status, answer = await state.backend.lookup(
            {"call_sid": call_sid, "card_last4": card_ct, "pin": encrypted.ciphertext,
             "caller": caller.ciphertext, "issued": form.query["issued"]},
            idempotency_key=form.request_key)
    except BackendUnavailable as exc:
        annotate(outcome="backend_unavailable", error=str(exc))
        return twiml.say_and_hang_up(twiml.TRY_LATER)
    annotate(backend_status=status)
    if status == 200:
        try:
            data = json.loads(answer)
            account, balance = str(data["account"]), str(data["balance"])
        except (ValueError, KeyError, TypeError):
            annotate(outcome="backend_bad_answer")
            return twiml.say_and_hang_up(twiml.TRY_LATER)
        annotate(outcome="found")
        return twiml.account_found(account, balance)
    outcome, sentence = BACKEND_ANSWERS.get(status, BACKEND_FAILED)
    annotate(outcome=outcome)
    return twiml.say_and_hang_up(sentence)


async def _too_busy(scope: Scope, receive: Receive, send: Send) -> None:
    """More calls at once than VOICE_CONCURRENCY: a calm goodbye, as for any failure."""
    annotate(outcome="too_busy")
    await _twiml(twiml.say_and_hang_up(twiml.TRY_LATER))(scope, receive, send)


def _route(handler: Handler, *, needs_call: bool = True,
           ) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        state: WebhookState = request.app.state.webhook
        try:
            form = await verified_form(request, state.settings)
        except WebhookRefused as refused:
            if refused.status == 403:
                state.metrics.signature_failures.inc()
            annotate(outcome=f"refused_{refused.reason.replace(' ', '_')}")
            return Response(status_code=refused.status)
        if needs_call and form.call_sid is None:
            annotate(outcome="bad_call_sid")
            return _twiml(twiml.say_and_hang_up(twiml.TRY_LATER))
        annotate(call_sid=form.call_sid)
        try:
            async with asyncio.timeout(REQUEST_BUDGET_S):
                body = await handler(state, form)
        except TimeoutError:
            annotate(outcome="timeout")
            body = twiml.say_and_hang_up(twiml.TRY_LATER)
        except VaultError as exc:
            state.metrics.vault_errors.labels(exc.kind).inc()
            annotate(outcome="vault_unavailable", error_kind=exc.kind)
            body = twiml.say_and_hang_up(twiml.TRY_LATER)
        except IvrVaultError as exc:
            annotate(outcome="failed", error=type(exc).__name__)
            body = twiml.say_and_hang_up(twiml.TRY_LATER)
        except Exception as exc:
            # A bug must not become Twilio's "an application error has occurred". Only
            # the type is logged: a traceback's locals could hold the caller's digits.
            log.error("unexpected error in a caller route", error=type(exc).__name__)
            annotate(outcome="failed", error=type(exc).__name__)
            body = twiml.say_and_hang_up(twiml.TRY_LATER)
        return _twiml(body)

    return endpoint


def create_webhook_app(settings: Settings, *,
                       transit_session: TransitSession = session.transit_session,
                       backend_session: BackendSession = http_backend,
                       drain: Drain | None = None) -> Starlette:
    """The webhook app. ``transit_session`` and ``backend_session`` are the seams the
    unit tests use (a fake Transit, a scripted backend); the defaults are the real ones:
    Vault, and the backend over HTTP at BACKEND_URL. ``drain``: set by the server on
    SIGTERM, it turns /readyz to 503."""
    settings.require("webhook")
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with transit_session(settings, metrics) as transit, \
                backend_session(settings) as backend:
            app.state.webhook = WebhookState(settings, transit, backend, metrics)
            freeze_startup_heap()
            yield

    async def ready() -> dict[str, bool]:
        state: WebhookState = app.state.webhook
        checks = {"vault": False, "backend": False}
        try:
            await state.transit.encrypt(b"ready", b"readyz:probe")
            checks["vault"] = True
        except IvrVaultError:
            pass
        checks["backend"] = await state.backend.healthy()
        return checks

    routes = [
        Route("/voice", _route(voice, needs_call=False), methods=["POST"]),
        Route("/voice/card", _route(card), methods=["POST"]),
        Route("/voice/pin", _route(pin), methods=["POST"]),
        *health_routes(ready, metrics, drain, limits={
            "step_max_age_s": settings.step_max_age}),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    # Inside the body limit (added first: Starlette's last added is outermost), so that a
    # client still sending its body holds no slot.
    app.add_middleware(ConcurrencyLimitMiddleware, limit=settings.voice_concurrency,
                       prefix="/voice", overflow=_too_busy)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLogMiddleware, on_complete=metrics.count_request)
    return app
