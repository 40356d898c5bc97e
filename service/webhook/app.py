"""The Twilio-facing webhook: /voice → /voice/card → /voice/pin.

Each entry is encrypted by Transit the moment it arrives, with a context that binds it
to this call and this field; from then on only ciphertext moves. A ``/voice*`` route
answers valid TwiML or an empty 4xx, never a 5xx: Twilio would read "an application
error has occurred" to the caller.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.errors import IvrVaultError, VaultError
from service.logs.scrubbing import fingerprint
from service.settings import Settings
from service.vault.session import freeze_startup_heap, transit_session
from service.vault.transit import Transit, call_context, ciphertext_version
from service.web.access_log import AccessLogMiddleware, annotate
from service.web.health import health_routes
from service.web.limits import BodyLimitMiddleware
from service.web.metrics import Metrics
from service.web.outbound import client_session, proxy_for
from service.webhook import twiml
from service.webhook.twilio_request import Refused, TwilioForm, verified_form

log = structlog.get_logger("ivr.webhook")

# Twilio waits 15 s; a caller should not. Past this the caller hears a calm goodbye.
REQUEST_BUDGET_S = 2.5


@dataclass
class WebhookState:
    settings: Settings
    transit: Transit
    backend: aiohttp.ClientSession  # for BACKEND_URL, with the bearer token
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


def _retry_or_goodbye(state: WebhookState, form: TwilioForm, path: str, prompt: str,
                      **query: str) -> str:
    attempt = _attempt(form)
    if attempt >= state.settings.max_attempts:
        annotate(outcome="too_many_tries", attempt=attempt)
        return twiml.say_and_hang_up(twiml.TOO_MANY_TRIES)
    annotate(outcome="reprompted", attempt=attempt)
    return twiml.gather(prompt, twiml.action_url(path, **query, attempt=attempt + 1),
                        preface=twiml.RETRY)


async def card(state: WebhookState, form: TwilioForm) -> str:
    call_sid = form.call_sid
    assert call_sid is not None  # checked by the dispatcher
    digits = form.digits()
    if digits is None:
        return _retry_or_goodbye(state, form, "/voice/card", twiml.ASK_CARD)
    encrypted = await state.transit.encrypt(digits.encode(), call_context(call_sid, "card_last4"))
    annotate(outcome="card_encrypted", key_version=encrypted.key_version,
             ct_fp=fingerprint(encrypted.ciphertext))
    return twiml.gather(twiml.ASK_PIN, twiml.action_url("/voice/pin", card=encrypted.ciphertext))


async def pin(state: WebhookState, form: TwilioForm) -> str:
    call_sid = form.call_sid
    assert call_sid is not None
    card_ct = form.query.get("card", "")
    if "?card" in form.duplicated or ciphertext_version(card_ct) is None:
        annotate(outcome="bad_card_ciphertext")
        return twiml.say_and_hang_up(twiml.CALL_AGAIN)
    digits = form.digits()
    if digits is None:
        return _retry_or_goodbye(state, form, "/voice/pin", twiml.ASK_PIN, card=card_ct)
    encrypted = await state.transit.encrypt(digits.encode(), call_context(call_sid, "pin"))
    annotate(key_version=encrypted.key_version, ct_fp=fingerprint(encrypted.ciphertext))
    idempotency_key = form.idempotency_token or f"{call_sid}:pin:{_attempt(form)}"
    try:
        async with state.backend.post(
            f"{state.settings.backend_url}/v1/lookup",
            json={"call_sid": call_sid, "card_last4": card_ct, "pin": encrypted.ciphertext},
            headers={"Idempotency-Key": idempotency_key},
        ) as response:
            status, answer = response.status, await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        annotate(outcome="backend_unavailable", error=type(exc).__name__)
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
    if status in (404, 423):
        annotate(outcome="locked" if status == 423 else "not_found")
        return twiml.say_and_hang_up(twiml.NOT_FOUND)
    if status == 422:
        annotate(outcome="ciphertext_rejected")
        return twiml.say_and_hang_up(twiml.CALL_AGAIN)
    annotate(outcome="backend_error")
    return twiml.say_and_hang_up(twiml.TRY_LATER)


def _route(handler: Handler, *, needs_call: bool = True,
           ) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        state: WebhookState = request.app.state.webhook
        try:
            form = await verified_form(request, state.settings)
        except Refused as refused:
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


def create_webhook_app(settings: Settings) -> Starlette:
    settings.require("webhook")
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        token = settings.backend_token
        assert token is not None
        async with transit_session(settings, metrics) as transit, client_session(
            settings.backend_url, timeout=settings.backend_timeout, limit=64,
            proxy=proxy_for(settings.backend_url),
            headers={"Authorization": f"Bearer {token.reveal()}"},
        ) as backend:
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
        try:
            async with state.backend.get(f"{settings.backend_url}/healthz") as response:
                checks["backend"] = response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            pass
        return checks

    routes = [
        Route("/voice", _route(voice, needs_call=False), methods=["POST"]),
        Route("/voice/card", _route(card), methods=["POST"]),
        Route("/voice/pin", _route(pin), methods=["POST"]),
        *health_routes(ready, metrics),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLogMiddleware, on_complete=metrics.count_request)
    return app
