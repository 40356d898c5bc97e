"""The Twilio-facing webhook: /voice → /voice/account → /voice/card → /voice/pin
(→ /voice/language first, when LANGUAGE_MENU offers several locales).

The first prompt is the same for every caller: the account number, or star for "I am
calling from the phone registered on my account". Nothing the caller hears before the
result depends on who is calling; the webhook asks the backend nothing before the PIN
step, where the one lookup decides. Each entry is encrypted by Transit the moment it
arrives, with a context that binds it to this call and this field; from then on only
ciphertext moves (in the signed action URLs: ``number`` or ``registered=1``, ``card``).
A ``/voice*`` route answers valid TwiML or an empty 4xx, never a 5xx: Twilio would read
"an application error has occurred" to the caller.
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
from service.formats import CARD_DIGITS, PIN_DIGITS, ciphertext_version
from service.logs.scrubbing import ciphertext_fields
from service.settings import Settings
from service.vault import session
from service.vault.session import TransitSession, freeze_startup_heap
from service.vault.transit import Transit, call_context
from service.web.access_log import AccessLogMiddleware, annotate
from service.web.budget import left, within
from service.web.health import Drain, health_routes
from service.web.limits import BodyLimitMiddleware, ConcurrencyLimitMiddleware
from service.web.metrics import Metrics
from service.webhook import twiml
from service.webhook.backend_client import BackendClient, BackendSession, http_backend
from service.webhook.locales.choice import LANG_PARAM, Locale, Localization
from service.webhook.signature import LOOKUP_KEY, lookup_key
from service.webhook.twilio_request import TwilioForm, verified_form

log = structlog.get_logger("ivr.webhook")

# The webhook's view of the backend's answers (docs/architecture.md, "One caller's digits",
# steps 17-18): status → (outcome, the catalog
# key of what the caller hears). A 200 is read apart, its body
# carries the account; any other status, and no answer at all, is the backend's failure:
# the caller is asked to call again later.
BACKEND_ANSWERS: Final[Mapping[int, tuple[str, str]]] = {
    404: ("not_found", "not_found"),
    # Locked card, caller number cut off, a second lookup in one call: the caller hears what
    # a wrong PIN hears, so that none of them is an oracle.
    423: ("locked", "not_found"),
    429: ("caller_cut_off", "not_found"),
    409: ("second_lookup", "not_found"),
    422: ("ciphertext_rejected", "call_again"),
    410: ("step_expired", "call_again"),  # older than the backend's CALL_MAX_AGE
}
BACKEND_FAILED: Final = ("backend_error", "try_later")
# Kept back from a PIN step's lookup, to send the step round when no backend answered:
# the redirect is a few microseconds of work, 0.1 s leaves room for a loaded event loop.
RESEND_RESERVE_S: Final = 0.1


@dataclass
class WebhookState:
    settings: Settings
    transit: Transit
    backend: BackendClient
    metrics: Metrics
    locales: Localization


Handler = Callable[[WebhookState, TwilioForm], Awaitable[str]]


def _twiml(body: str) -> Response:
    return Response(body, media_type="application/xml")


def _attempt(form: TwilioForm) -> int:
    raw = form.query.get("attempt", "1")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 3 else 1


def _locale(state: WebhookState, form: TwilioForm) -> Locale:
    """This call's locale: the menu choice its action URL carries, else the called
    number's, else LOCALE."""
    lang = None if f"?{LANG_PARAM}" in form.duplicated else form.query.get(LANG_PARAM)
    to = None if "To" in form.duplicated else form.params.get("To")
    return state.locales.for_call(to, lang)


def _goodbye(state: WebhookState, form: TwilioForm, key: str) -> str:
    locale = _locale(state, form)
    return twiml.say_and_hang_up(locale.text(key), locale.say)


def _ask_account(
    state: WebhookState, locale: Locale, action: str, *, preface: str | None = None
) -> str:
    digits = state.settings.account_number_digits
    return twiml.gather(
        locale.text("ask_account", digits=str(digits)),
        action,
        say=locale.say,
        digits=digits,
        finish_on_key=twiml.REGISTERED_KEY,
        preface=preface,
    )


def _first_prompt(state: WebhookState, locale: Locale) -> str:
    return _ask_account(state, locale, twiml.action_url("/voice/account", **locale.query))


async def voice(state: WebhookState, form: TwilioForm) -> str:
    annotate(outcome="prompted")
    menu = state.locales.menu
    if menu:
        return twiml.menu(
            [
                (offered.text("menu_option", digit=str(key)), offered.say)
                for key, offered in enumerate(menu, start=1)
            ],
            twiml.action_url("/voice/language"),
        )
    return _first_prompt(state, _locale(state, form))


async def language(state: WebhookState, form: TwilioForm) -> str:
    """The menu's answer. No key or another key: the called number's locale. The key is
    logged only as the locale it chose (a menu choice is not secret, but no caller key
    is ever logged as a digit)."""
    chosen = (
        None
        if "Digits" in form.duplicated
        else state.locales.menu_choice(form.params.get("Digits"))
    )
    locale = chosen or _locale(state, form)
    annotate(outcome="language_chosen" if chosen else "language_default", locale=locale.tag)
    return _first_prompt(state, locale)


def _retry_or_goodbye(
    state: WebhookState,
    form: TwilioForm,
    ask: Callable[[str, str], str],
    action: Callable[[int], str],
    retry: str,
) -> str:
    """Ask again (``ask(action, preface)``), posting to ``action(next attempt)``; after
    MAX_ATTEMPTS, goodbye."""
    attempt = _attempt(form)
    locale = _locale(state, form)
    if attempt >= state.settings.max_attempts:
        annotate(outcome="too_many_tries", attempt=attempt)
        return twiml.say_and_hang_up(locale.text("too_many_tries"), locale.say)
    annotate(outcome="reprompted", attempt=attempt)
    return ask(action(attempt + 1), retry)


def _gather(locale: Locale, key: str, digits: int) -> Callable[[str, str], str]:
    return lambda action, preface: twiml.gather(
        locale.text(key), action, say=locale.say, digits=digits, preface=preface
    )


async def account(state: WebhookState, form: TwilioForm) -> str:
    call_sid = form.call_sid
    assert call_sid is not None  # checked by the dispatcher
    locale = _locale(state, form)
    if form.pressed_only(twiml.REGISTERED_KEY):
        annotate(outcome="registered_phone")
        return twiml.gather(
            locale.text("ask_card"),
            twiml.action_url("/voice/card", registered=1, **locale.query),
            say=locale.say,
            digits=CARD_DIGITS,
        )
    count = state.settings.account_number_digits
    digits = form.digits(count)
    if digits is None:
        return _retry_or_goodbye(
            state,
            form,
            lambda action, preface: _ask_account(state, locale, action, preface=preface),
            lambda n: twiml.action_url("/voice/account", attempt=n, **locale.query),
            locale.text("retry_account", digits=str(count)),
        )
    encrypted = await state.transit.encrypt(
        digits.encode(), call_context(call_sid, "account_number")
    )
    annotate(outcome="account_number_encrypted", **ciphertext_fields(encrypted.ciphertext))
    return twiml.gather(
        locale.text("ask_card"),
        twiml.action_url("/voice/card", number=encrypted.ciphertext, **locale.query),
        say=locale.say,
        digits=CARD_DIGITS,
    )


def _identification(form: TwilioForm) -> dict[str, str | int] | None:
    """The signed identification a step carries on: ``number`` (a ciphertext) or
    ``registered=1``, exactly one; None when it is neither, repeated or garbled."""
    number, registered = form.query.get("number"), form.query.get("registered")
    if {"?number", "?registered"} & form.duplicated:
        return None
    if number is not None and registered is None and ciphertext_version(number) is not None:
        return {"number": number}
    if registered == "1" and number is None:
        return {"registered": 1}
    return None


async def card(state: WebhookState, form: TwilioForm) -> str:
    call_sid = form.call_sid
    assert call_sid is not None  # checked by the dispatcher
    identification = _identification(form)
    if identification is None:
        annotate(outcome="bad_identification")
        return _goodbye(state, form, "call_again")
    digits = form.digits(CARD_DIGITS)
    locale = _locale(state, form)
    if digits is None:
        return _retry_or_goodbye(
            state,
            form,
            _gather(locale, "ask_card", CARD_DIGITS),
            lambda n: twiml.action_url("/voice/card", **identification, attempt=n, **locale.query),
            locale.text("retry"),
        )
    encrypted = await state.transit.encrypt(digits.encode(), call_context(call_sid, "card_last4"))
    annotate(outcome="card_encrypted", **ciphertext_fields(encrypted.ciphertext))
    return twiml.gather(
        locale.text("ask_pin"),
        _pin_action(encrypted.ciphertext, **identification, **locale.query),
        say=locale.say,
        digits=PIN_DIGITS,
    )


def _pin_action(card_ct: str, **query: str | int) -> str:
    """The PIN step's action URL: the card ciphertext, the identification and the time it
    was issued, all covered by Twilio's signature of the request that comes back."""
    return twiml.action_url("/voice/pin", card=card_ct, issued=int(time.time()), **query)


def _resent(form: TwilioForm) -> tuple[str, str] | None:
    """The PIN's ciphertext and the lookup key that a PIN step sent round again carries;
    None when either is missing, repeated or malformed."""
    pin_ct, key = form.query.get("pin", ""), form.query.get("key", "")
    if {"?pin", "?key"} & form.duplicated or ciphertext_version(pin_ct) is None:
        return None
    return (pin_ct, key) if LOOKUP_KEY.fullmatch(key) else None


def _left(state: WebhookState) -> float:
    spent = left()
    return state.settings.request_budget if spent is None else spent


async def pin(state: WebhookState, form: TwilioForm) -> str:
    call_sid = form.call_sid
    assert call_sid is not None
    card_ct = form.query.get("card", "")
    if "?card" in form.duplicated or ciphertext_version(card_ct) is None:
        annotate(outcome="bad_card_ciphertext")
        return _goodbye(state, form, "call_again")
    # A replay of a captured request, once older than STEP_MAX_AGE, ends here: it never
    # reaches the backend, whose memory of the call outlasts this limit.
    if not form.step_is_fresh(time.time(), state.settings.step_max_age):
        annotate(outcome="step_expired")
        return _goodbye(state, form, "call_again")
    identification = _identification(form)
    if identification is None:
        annotate(outcome="bad_identification")
        return _goodbye(state, form, "call_again")
    locale = _locale(state, form)
    if "pin" in form.query:  # this step sent round again (below): its entry rides along
        resent = _resent(form)
        if resent is None:
            annotate(outcome="bad_resent_step")
            return _goodbye(state, form, "call_again")
        pin_ct, key = resent
        caller = await state.transit.encrypt(form.caller.encode(), call_context(call_sid, "caller"))
        annotate(resent=True)
    else:
        digits = form.digits(PIN_DIGITS)
        if digits is None:
            return _retry_or_goodbye(
                state,
                form,
                _gather(locale, "ask_pin", PIN_DIGITS),
                lambda n: _pin_action(card_ct, **identification, attempt=n, **locale.query),
                locale.text("retry"),
            )
        # The caller's number goes to the backend encrypted, like the entries: it is
        # personal data, and the backend keeps only its keyed HMAC.
        encrypted, caller = await asyncio.gather(
            state.transit.encrypt(digits.encode(), call_context(call_sid, "pin")),
            state.transit.encrypt(form.caller.encode(), call_context(call_sid, "caller")),
        )
        pin_ct = encrypted.ciphertext
        token = state.settings.twilio_auth_token
        assert token is not None  # Settings.require("webhook") checked it
        key = lookup_key(token.reveal(), form.request_key)
    step = PinStep(card_ct, identification, pin_ct, caller.ciphertext, key)
    return await _look_up(state, form, step)


@dataclass(frozen=True)
class PinStep:
    """What a PIN step's lookup sends, all ciphertext but the call's identifiers."""

    card: str
    identification: dict[str, str | int]  # ``number`` (a ciphertext) or ``registered``
    pin: str
    caller: str
    key: str  # the lookup's Idempotency-Key (signature.lookup_key)


async def _look_up(state: WebhookState, form: TwilioForm, step: PinStep) -> str:
    """The one lookup of a PIN step, and what the caller hears of it."""
    call_sid = form.call_sid
    assert call_sid is not None
    locale = _locale(state, form)
    annotate(**ciphertext_fields(step.pin))
    body: dict[str, str | bool] = {
        "call_sid": call_sid,
        "card_last4": step.card,
        "pin": step.pin,
        "caller": step.caller,
        "issued": form.query["issued"],
    }
    if "number" in step.identification:
        body["account_number"] = str(step.identification["number"])
    else:
        body["registered"] = True
    if form.stir_verstat is not None:
        body["stir_verstat"] = form.stir_verstat
    try:
        # What is left of the budget but a moment, so that a lookup no replica answered
        # still leaves time to send the step round (before, the request's own deadline
        # struck first: the 6 calls the asymmetric cut lost, all at 2.50 s).
        async with within(_left(state) - RESEND_RESERVE_S):
            status, answer = await state.backend.lookup(body, idempotency_key=step.key)
    except (BackendUnavailable, TimeoutError) as exc:
        error = str(exc) or "request budget spent"
        if "pin" in form.query:
            annotate(outcome="backend_unavailable", error=error)
            return _goodbye(state, form, "try_later")
        # This webhook reached no backend (cut off from them, as in
        # tests/integration/ha/test_partitions.py): the step goes round again through the
        # proxy, which may hand it to a webhook that does. Once only: this try took the
        # budget (~2.4 s), longer than a webhook cut off takes to turn unready and leave
        # Caddy's rotation (/readyz 503 after 1.1-1.6 s, checked every 0.5 s, in the
        # drill). The same key, so a lookup this one started and a backend decided is
        # answered, not decided twice.
        annotate(outcome="resent", error=error)
        return twiml.redirect(
            twiml.action_url(
                "/voice/pin",
                card=step.card,
                issued=form.query["issued"],
                pin=step.pin,
                key=step.key,
                **step.identification,
                **locale.query,
            )
        )
    annotate(backend_status=status)
    if status == 200:
        try:
            data = json.loads(answer)
            account, balance = str(data["account"]), str(data["balance"])
        except (ValueError, KeyError, TypeError):
            annotate(outcome="backend_bad_answer")
            return _goodbye(state, form, "try_later")
        annotate(outcome="found")
        return twiml.account_found(
            locale.catalog.messages["found"], account, locale.amount(balance), locale.say
        )
    outcome, heard = BACKEND_ANSWERS.get(status, BACKEND_FAILED)
    annotate(outcome=outcome)
    return _goodbye(state, form, heard)


def _too_busy(locale: Locale) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """More calls at once than VOICE_CONCURRENCY: a calm goodbye, as for any failure, in
    the default locale (the form, and so the call's locale, is not read for it)."""
    goodbye = twiml.say_and_hang_up(locale.text("try_later"), locale.say)

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        annotate(outcome="too_busy")
        await _twiml(goodbye)(scope, receive, send)

    return answer


def _route(
    handler: Handler,
    *,
    needs_call: bool = True,
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
            return _twiml(_goodbye(state, form, "try_later"))
        annotate(call_sid=form.call_sid)
        try:
            # Twilio waits 15 s; a caller should not. Past REQUEST_BUDGET the caller
            # hears a calm goodbye.
            async with within(state.settings.request_budget):
                body = await handler(state, form)
        except TimeoutError:
            annotate(outcome="timeout")
            body = _goodbye(state, form, "try_later")
        except VaultError as exc:
            state.metrics.vault_errors.labels(exc.kind).inc()
            annotate(outcome="vault_unavailable", error_kind=exc.kind)
            body = _goodbye(state, form, "try_later")
        except IvrVaultError as exc:
            annotate(outcome="failed", error=type(exc).__name__)
            body = _goodbye(state, form, "try_later")
        except Exception as exc:
            # A bug must not become Twilio's "an application error has occurred". Only
            # the type is logged: a traceback's locals could hold the caller's digits.
            log.error("unexpected error in a caller route", error=type(exc).__name__)
            annotate(outcome="failed", error=type(exc).__name__)
            body = _goodbye(state, form, "try_later")
        return _twiml(body)

    return endpoint


def create_webhook_app(
    settings: Settings,
    *,
    transit_session: TransitSession = session.transit_session,
    backend_session: BackendSession = http_backend,
    drain: Drain | None = None,
) -> Starlette:
    """The webhook app. ``transit_session`` and ``backend_session`` are the seams the
    unit tests use (a fake Transit, a scripted backend); the defaults are the real ones:
    Vault, and the backend over HTTP at BACKEND_URL. ``drain``: set by the server on
    SIGTERM, it turns /readyz to 503."""
    settings.require("webhook")
    locales = Localization.from_settings(settings)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with (
            transit_session(settings, metrics) as transit,
            backend_session(settings) as backend,
        ):
            app.state.webhook = WebhookState(settings, transit, backend, metrics, locales)
            freeze_startup_heap()
            yield

    async def ready() -> dict[str, bool]:
        state: WebhookState = app.state.webhook

        async def vault() -> bool:
            try:
                await state.transit.encrypt(b"ready", b"readyz:probe")
            except IvrVaultError:
                return False
            return True

        # Side by side: one slow answer must not use up the other's time (/readyz has 2 s).
        checks = await asyncio.gather(vault(), state.backend.healthy())
        return dict(zip(("vault", "backend"), checks, strict=True))

    routes = [
        Route("/voice", _route(voice, needs_call=False), methods=["POST"]),
        Route("/voice/language", _route(language, needs_call=False), methods=["POST"]),
        Route("/voice/account", _route(account), methods=["POST"]),
        Route("/voice/card", _route(card), methods=["POST"]),
        Route("/voice/pin", _route(pin), methods=["POST"]),
        *health_routes(ready, metrics, drain, limits={"step_max_age_s": settings.step_max_age}),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    # Inside the body limit (added first: Starlette's last added is outermost), so that a
    # client still sending its body holds no slot.
    app.add_middleware(
        ConcurrencyLimitMiddleware,
        limit=settings.voice_concurrency,
        prefix="/voice",
        overflow=_too_busy(locales.default),
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLogMiddleware, on_complete=metrics.count_request)
    return app
