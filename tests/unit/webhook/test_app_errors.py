"""The webhook app in process: a bug in a handler still answers TwiML. Hostile input against
the running webhook: tests/integration/calls/test_hostile_input.py."""

from __future__ import annotations

import pytest

from service.webhook import twiml as texts
from tests.support.attack import base_params, hangs_up, signed_post, spoken, twiml


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_an_unexpected_error_still_answers_twiml() -> None:
    """Defence in depth, in process: a handler with a bug gives the calm goodbye, not the
    5xx that Twilio would read out as "an application error has occurred"."""
    from starlette.applications import Starlette
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from service.settings import Secret, Settings
    from service.web.metrics import Metrics
    from service.webhook.app import WebhookState, _route
    from service.webhook.locales.choice import Localization
    from service.webhook.twilio_request import TwilioForm

    async def buggy(state: WebhookState, form: TwilioForm) -> str:
        raise RuntimeError("a bug")

    settings = Settings(twilio_auth_token=Secret("tok"), public_base_url="http://testserver")
    app = Starlette(routes=[Route("/voice/card", _route(buggy), methods=["POST"])])
    app.state.webhook = WebhookState(
        settings,
        None,  # type: ignore[arg-type]  # no Transit: the buggy route raises before any use
        None,  # type: ignore[arg-type]  # no backend, likewise
        Metrics(),
        Localization.from_settings(settings),
    )
    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = signed_post(
            test_client, "tok", "http://testserver/voice/card", [*base_params(), ("Digits", "1234")]
        )
    root = twiml(response)
    assert hangs_up(root) and spoken(root) == texts.TRY_LATER
