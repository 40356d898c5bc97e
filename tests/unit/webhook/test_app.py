"""The webhook's HTTP edge in process: Starlette's TestClient, a fake Transit
(tests/support/fake_transit.py) and a scripted backend (the ``backend_session`` seam).

What is proved here is the webhook's own logic: refusing what Twilio would not send, the
TwiML of each step, re-prompts, what each backend answer is turned into, and that nothing
becomes a 5xx. Vault, the real backend and uvicorn are the integration tests' business
(tests/integration/calls/test_call_flow.py, test_hostile_input.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import warnings
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.devtools.caller import new_call_sid
from service.errors import BackendUnavailable, VaultUnavailable
from service.settings import Secret, Settings
from service.webhook import twiml as texts
from service.webhook.app import create_webhook_app
from service.webhook.signature import lookup_key, request_key
from tests.support.attack import base_params, gather_action, hangs_up, signed_post, spoken, twiml
from tests.support.fake_transit import FakeTransit, fake_session

with warnings.catch_warnings():  # Starlette would have httpx2; the users chose httpx
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

TOKEN = "twilio-auth-token-for-tests"
BEARER = "backend-bearer-for-tests"
BASE = "http://testserver"
SETTINGS = Settings(
    vault_role_id=Secret("role"),
    vault_secret_id=Secret("secret"),
    twilio_auth_token=Secret(TOKEN),
    backend_token=Secret(BEARER),
    public_base_url=BASE,
    backend_url=("http://backend.invalid",),
    max_attempts=3,
)
FOUND = {"account": "AC12345678", "balance": "12.55"}


@dataclass(frozen=True)
class LookupSent:
    body: dict[str, str | bool]
    idempotency_key: str


@dataclass
class ScriptedBackend:
    """Answers lookups with ``answer``; ``None`` means the backend is unreachable. How the
    real client speaks HTTP (URL, bearer token) is the integration tests' business."""

    answer: tuple[int, object] | None = (200, FOUND)
    requests: list[LookupSent] = field(default_factory=list)
    delay: float = 0.0  # seconds before it answers: a silent backend

    async def lookup(
        self,
        body: Mapping[str, str | bool],
        *,
        idempotency_key: str,
    ) -> tuple[int, bytes]:
        self.requests.append(LookupSent(dict(body), idempotency_key))
        await asyncio.sleep(self.delay)
        if self.answer is None:
            raise BackendUnavailable("lookup: ClientConnectorError")
        status, payload = self.answer
        return status, (payload if isinstance(payload, str) else json.dumps(payload)).encode()

    async def healthy(self) -> bool:
        return self.answer is not None

    @asynccontextmanager
    async def session(self, settings: Settings) -> AsyncIterator[ScriptedBackend]:
        yield self


@dataclass
class Webhook:
    client: TestClient
    transit: FakeTransit
    backend: ScriptedBackend

    def post(self, path: str, call_sid: str | None = None, **params: str) -> httpx.Response:
        pairs = [*base_params(call_sid), *params.items()]
        return signed_post(self.client, TOKEN, BASE + path, pairs)

    def metric(self, name: str, **labels: str) -> float:
        text = self.client.get("/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    transit, backend = FakeTransit(), ScriptedBackend()
    app = create_webhook_app(
        SETTINGS, transit_session=fake_session(transit), backend_session=backend.session
    )
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
        yield Webhook(client, transit, backend)
    assert transit.closed  # the lifespan closed what it opened


def query(action: str | None) -> dict[str, list[str]]:
    assert action is not None
    return parse_qs(urlsplit(action).query)


def pin_path(card: str, *, age: float = 0.0, **extra: str) -> str:
    """The PIN step's action URL as the card step issues it, ``age`` seconds ago (on the
    registered-phone path unless ``extra`` says otherwise)."""
    identification = extra or {"registered": "1"}
    return "/voice/pin?" + urlencode(
        {"card": card, "issued": int(time.time() - age), **identification}
    )


CARD_STEP = "/voice/card?registered=1"  # the card step after the caller pressed star


# -- not a Twilio request: 403, empty body ------------------------------------------------


def test_an_unsigned_or_missigned_request_is_403_with_an_empty_body(webhook: Webhook) -> None:
    pairs = [*base_params(), ("Digits", "1234")]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    answers = [
        webhook.client.post("/voice/card", content=b"Digits=1234", headers=form),
        webhook.client.post(
            "/voice/card",
            content=b"Digits=1234",
            headers={**form, "X-Twilio-Signature": "bm90IGl0"},
        ),
        signed_post(webhook.client, "another-token", BASE + "/voice/card", pairs),
        signed_post(
            webhook.client, TOKEN, BASE + "/voice/card", pairs, sign_url=BASE + "/voice/pin"
        ),
        signed_post(
            webhook.client,
            TOKEN,
            BASE + "/voice/card",
            pairs,
            sign_pairs=[*pairs[:-1], ("Digits", "9999")],
        ),
    ]
    assert [(r.status_code, r.content) for r in answers] == [(403, b"")] * 5
    assert webhook.transit.encrypted == []
    assert webhook.metric("ivr_signature_failures_total") == 5


def test_a_form_twilio_would_not_send_is_refused_before_the_signature(
    webhook: Webhook,
) -> None:
    response = webhook.client.post("/voice", json={"CallSid": new_call_sid()})
    assert (response.status_code, response.content) == (415, b"")


# -- the call flow's TwiML ------------------------------------------------------------------


def test_voice_asks_every_caller_for_the_account_number_or_star(webhook: Webhook) -> None:
    root = twiml(webhook.post("/voice"))
    gather = root.find("Gather")
    assert gather is not None
    assert (
        gather.attrib["action"],
        gather.attrib["numDigits"],
        gather.attrib["finishOnKey"],
        gather.attrib["input"],
        gather.attrib["method"],
    ) == ("/voice/account", "8", "*", "dtmf", "POST")
    assert spoken(root) == texts.ask_account(8)


def test_star_alone_takes_the_registered_phone_path_without_asking_anything(
    webhook: Webhook,
) -> None:
    root = twiml(webhook.post("/voice/account", new_call_sid(), Digits="", FinishedOnKey="*"))
    assert spoken(root) == texts.ASK_CARD
    assert gather_action(root) == CARD_STEP
    assert webhook.transit.encrypted == [] and webhook.backend.requests == []


def test_the_account_number_is_encrypted_for_this_call_and_rides_on(webhook: Webhook) -> None:
    sid = new_call_sid()
    root = twiml(webhook.post("/voice/account", sid, Digits="31415926", FinishedOnKey=""))
    assert spoken(root) == texts.ASK_CARD
    number = webhook.transit.seal(b"31415926", f"{sid}:account_number".encode())
    assert query(gather_action(root)) == {"number": [number]}
    assert webhook.transit.encrypted == [(b"31415926", f"{sid}:account_number".encode())]
    card = twiml(webhook.post(str(gather_action(root)), sid, Digits="1234"))
    assert query(gather_action(card))["number"] == [number]
    assert webhook.backend.requests == []  # nothing asked before the PIN step


@pytest.mark.parametrize("digits", ["", "1234567", "123456789", "1234567a", "#"])
def test_a_bad_account_number_reprompts_then_says_goodbye(webhook: Webhook, digits: str) -> None:
    sid = new_call_sid()
    first = twiml(webhook.post("/voice/account", sid, Digits=digits))
    assert spoken(first) == f"Sorry, that was not 8 digits. {texts.ask_account(8)}"
    assert gather_action(first) == "/voice/account?attempt=2"
    twiml(webhook.post("/voice/account?attempt=2", sid, Digits=digits))
    last = twiml(webhook.post("/voice/account?attempt=3", sid, Digits=digits))
    assert hangs_up(last) and spoken(last) == texts.TOO_MANY_TRIES
    assert webhook.transit.encrypted == []


@pytest.mark.parametrize(
    "path",
    [
        "/voice/card",
        "/voice/card?number=1234",
        "/voice/card?registered=2",
        "/voice/card?registered=1&registered=1",
        "/voice/card?registered=1&number=vault:v1:YQ==",
    ],
)
def test_a_card_step_without_one_signed_identification_ends_the_call(
    webhook: Webhook, path: str
) -> None:
    root = twiml(webhook.post(path, new_call_sid(), Digits="1234"))
    assert hangs_up(root) and spoken(root) == texts.CALL_AGAIN
    assert webhook.transit.encrypted == []


@pytest.mark.parametrize("digits", ["", "123", "12345", "12a4", "١٢٣٤", "12 4"])
def test_a_bad_card_entry_reprompts_then_says_goodbye(webhook: Webhook, digits: str) -> None:
    sid = new_call_sid()
    first = twiml(webhook.post(CARD_STEP, sid, Digits=digits))
    assert spoken(first) == f"Sorry, that was not 4 digits. {texts.ASK_CARD}"
    assert gather_action(first) == "/voice/card?registered=1&attempt=2"
    second = twiml(webhook.post("/voice/card?registered=1&attempt=2", sid, Digits=digits))
    assert gather_action(second) == "/voice/card?registered=1&attempt=3"
    last = twiml(webhook.post("/voice/card?registered=1&attempt=3", sid, Digits=digits))
    assert hangs_up(last) and spoken(last) == texts.TOO_MANY_TRIES
    assert webhook.transit.encrypted == []  # nothing that is not 4 digits is encrypted


def test_the_card_is_encrypted_for_this_call_and_rides_in_the_pin_action(
    webhook: Webhook,
) -> None:
    sid = new_call_sid()
    root = twiml(webhook.post(CARD_STEP, sid, Digits="1234"))
    assert spoken(root) == texts.ASK_PIN
    assert webhook.transit.encrypted == [(b"1234", f"{sid}:card_last4".encode())]
    action = gather_action(root)
    assert action is not None and action.startswith("/voice/pin?")
    (card,) = query(action)["card"]
    assert card == webhook.transit.seal(b"1234", f"{sid}:card_last4".encode())
    assert query(action)["registered"] == ["1"]
    # The issue time rides along, under the same signature as the card.
    (issued,) = query(action)["issued"]
    assert abs(int(issued) - time.time()) < 5
    assert "1234" not in webhook.post(CARD_STEP, sid, Digits="1234").text


# -- the PIN: the backend's answer becomes a sentence --------------------------------------


@pytest.mark.parametrize(
    ("answer", "heard", "outcome"),
    [
        (
            (200, FOUND),
            "Thank you. Your account number is AC12345678 and your balance is 12.55",
            "found",
        ),
        ((404, {"detail": "not found"}), texts.NOT_FOUND, "not_found"),
        ((423, {"detail": "locked"}), texts.NOT_FOUND, "locked"),  # no oracle for a guesser
        (
            (429, {"detail": "too many failed lookups from this caller"}),
            texts.NOT_FOUND,
            "caller_cut_off",
        ),
        ((409, {"detail": "this call already had its lookup"}), texts.NOT_FOUND, "second_lookup"),
        (
            (422, {"detail": "ciphertext could not be decrypted for this call"}),
            texts.CALL_AGAIN,
            "ciphertext_rejected",
        ),
        ((500, "Internal Server Error"), texts.TRY_LATER, "backend_error"),
        ((503, {"detail": "vault unavailable"}), texts.TRY_LATER, "backend_error"),
        ((401, ""), texts.TRY_LATER, "backend_error"),
        ((200, {"account": "AC1"}), texts.TRY_LATER, "backend_bad_answer"),
        ((200, "not json"), texts.TRY_LATER, "backend_bad_answer"),
    ],
)
def test_the_backends_answer_is_what_the_caller_hears(
    webhook: Webhook, answer: tuple[int, object] | None, heard: str, outcome: str
) -> None:
    webhook.backend.answer = answer
    sid = new_call_sid()
    card = webhook.transit.seal(b"1234", f"{sid}:card_last4".encode())
    path = pin_path(card)
    root = twiml(webhook.post(path, sid, Digits="4321"))
    assert hangs_up(root) and spoken(root) == heard
    assert webhook.metric("ivr_requests_total", route="/voice/pin", outcome=outcome) == 1

    (request,) = webhook.backend.requests
    pin = webhook.transit.seal(b"4321", f"{sid}:pin".encode())
    caller = webhook.transit.seal(b"+15005550006", f"{sid}:caller".encode())
    assert request.body == {
        "call_sid": sid,
        "card_last4": card,
        "pin": pin,
        "caller": caller,
        "registered": True,
        "issued": parse_qs(urlsplit(path).query)["issued"][0],
    }


def test_the_lookup_carries_the_account_number_and_the_attestation(webhook: Webhook) -> None:
    sid = new_call_sid()
    card = webhook.transit.seal(b"1234", f"{sid}:card_last4".encode())
    number = webhook.transit.seal(b"31415926", f"{sid}:account_number".encode())
    twiml(
        webhook.post(
            pin_path(card, number=number), sid, Digits="4321", StirVerstat="TN-Validation-Passed-A"
        )
    )
    (request,) = webhook.backend.requests
    assert request.body["account_number"] == number and "registered" not in request.body
    assert request.body["stir_verstat"] == "TN-Validation-Passed-A"


def test_the_idempotency_key_is_what_twilio_signed_never_an_unsigned_header(
    webhook: Webhook,
) -> None:
    webhook.backend.answer = (404, {"detail": "not found"})
    sid = new_call_sid()
    path = pin_path(webhook.transit.seal(b"1234", f"{sid}:card_last4".encode()))
    pairs = [*base_params(sid), ("Digits", "0000")]
    for token in ("first-token", "second-token", None):  # a replay with fresh tokens
        headers = {"I-Twilio-Idempotency-Token": token} if token else {}
        signed_post(webhook.client, TOKEN, BASE + path, pairs, headers=headers)
    keys = {r.idempotency_key for r in webhook.backend.requests}
    assert keys == {lookup_key(TOKEN, request_key(BASE + path, pairs))}
    # Another signed request of the same call (another entry) has another key.
    signed_post(webhook.client, TOKEN, BASE + path, [*base_params(sid), ("Digits", "1111")])
    assert len({r.idempotency_key for r in webhook.backend.requests}) == 2


# -- no backend answered: the step goes round again, once -------------------------------


FOUND_SAID = "Thank you. Your account number is AC12345678 and your balance is 12.55"


def resend_url(root: ET.Element) -> str:
    """The URL of a ``<Redirect>`` (POST), the document's only verb."""
    (verb,) = list(root)
    assert verb.tag == "Redirect" and verb.attrib["method"] == "POST", ET.tostring(root)
    assert verb.text is not None
    return verb.text


@pytest.mark.parametrize("second", [None, (200, FOUND), (404, {"detail": "not found"})])
def test_a_pin_step_no_backend_answered_goes_round_again_with_its_ciphertexts_once(
    webhook: Webhook, second: tuple[int, object] | None
) -> None:
    webhook.backend.answer = None
    sid = new_call_sid()
    card = webhook.transit.seal(b"1234", f"{sid}:card_last4".encode())
    number = webhook.transit.seal(b"31415926", f"{sid}:account_number".encode())
    path = pin_path(card, number=number)
    pairs = [*base_params(sid), ("Digits", "4321")]
    first = twiml(signed_post(webhook.client, TOKEN, BASE + path, pairs))
    assert not spoken(first)  # the caller hears nothing meanwhile
    url = resend_url(first)
    # Only ciphertexts and what the step carried already: never an entry in a URL.
    pin = webhook.transit.seal(b"4321", f"{sid}:pin".encode())
    key = lookup_key(TOKEN, request_key(BASE + path, pairs))
    assert urlsplit(url).path == "/voice/pin"
    assert query(url) == {
        "card": [card],
        "number": [number],
        "issued": query(path)["issued"],
        "pin": [pin],
        "key": [key],
    }
    assert "4321" not in url and "31415926" not in url
    assert webhook.metric("ivr_requests_total", route="/voice/pin", outcome="resent") == 1

    # Twilio requests it (no Digits) through the proxy: the same lookup, the same key.
    webhook.backend.answer = second
    root = twiml(webhook.post(url, sid))
    assert hangs_up(root)
    if second is None:  # once only: then the calm goodbye
        assert spoken(root) == texts.TRY_LATER
        assert webhook.metric("ivr_requests_total", route="/voice/pin", outcome="resent") == 1
    else:
        assert spoken(root) == (texts.NOT_FOUND if second[0] == 404 else FOUND_SAID)
    sent, again = webhook.backend.requests
    assert again == sent and sent.idempotency_key == key


def test_a_lookup_that_outlasts_the_budget_goes_round_within_it() -> None:
    """A silent backend: the lookup is cut short of the budget, so that the step goes round
    instead of the request's own deadline ending it with a goodbye (the 6 calls of the
    asymmetric cut, tests/integration/ha/test_partitions.py, before)."""
    transit, backend = FakeTransit(), ScriptedBackend(delay=5.0)
    settings = dataclasses.replace(SETTINGS, request_budget=0.5)
    app = create_webhook_app(
        settings, transit_session=fake_session(transit), backend_session=backend.session
    )
    sid = new_call_sid()
    path = pin_path(transit.seal(b"1234", f"{sid}:card_last4".encode()))
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
        started = time.monotonic()
        root = twiml(
            signed_post(client, TOKEN, BASE + path, [*base_params(sid), ("Digits", "4321")])
        )
        took = time.monotonic() - started
    assert query(resend_url(root))["pin"] == [transit.seal(b"4321", f"{sid}:pin".encode())]
    assert 0.3 < took < 0.5


@pytest.mark.parametrize(
    "bad",
    [
        {"pin": "4321"},  # an entry, not a ciphertext
        {"key": "0" * 63},
        {"key": "A" * 64},
        {"key": None},
        {"pin": "vault:v1:"},
    ],
)
def test_a_resent_step_that_is_not_what_we_sent_ends_the_call_without_a_lookup(
    webhook: Webhook, bad: dict[str, str | None]
) -> None:
    sid = new_call_sid()
    card = webhook.transit.seal(b"1234", f"{sid}:card_last4".encode())
    fields: dict[str, str | None] = {
        "pin": webhook.transit.seal(b"4321", f"{sid}:pin".encode()),
        "key": "0" * 64,
    }
    fields.update(bad)
    sent = {k: v for k, v in fields.items() if v is not None}
    root = twiml(webhook.post(pin_path(card) + "&" + urlencode(sent), sid))
    assert hangs_up(root) and spoken(root) == texts.CALL_AGAIN
    assert webhook.backend.requests == []


def test_a_resent_step_with_a_repeated_pin_ends_the_call(webhook: Webhook) -> None:
    sid = new_call_sid()
    card = webhook.transit.seal(b"1234", f"{sid}:card_last4".encode())
    pin = webhook.transit.seal(b"4321", f"{sid}:pin".encode())
    path = pin_path(card) + "&" + urlencode({"pin": pin, "key": "0" * 64}) + "&pin=" + pin
    root = twiml(webhook.post(path, sid))
    assert spoken(root) == texts.CALL_AGAIN and webhook.backend.requests == []


@pytest.mark.parametrize("issued", ["stale", "missing", "garbled", "repeated", "future"])
def test_an_old_or_unreadable_pin_step_ends_the_call_without_a_lookup(
    webhook: Webhook, issued: str
) -> None:
    sid = new_call_sid()
    card = webhook.transit.seal(b"1234", f"{sid}:card_last4".encode())
    path = {
        "stale": pin_path(card, age=SETTINGS.step_max_age + 5),
        "missing": "/voice/pin?" + urlencode({"card": card}),
        "garbled": "/voice/pin?" + urlencode({"card": card, "issued": "soon"}),
        "repeated": pin_path(card) + f"&issued={int(time.time())}",
        "future": pin_path(card, age=-3600),
    }[issued]
    root = twiml(webhook.post(path, sid, Digits="4321"))
    assert hangs_up(root) and spoken(root) == texts.CALL_AGAIN
    assert webhook.metric("ivr_requests_total", route="/voice/pin", outcome="step_expired") == 1
    assert webhook.backend.requests == [] and webhook.transit.encrypted == []


@pytest.mark.parametrize(
    ("sent", "bucket"),
    [("+442071838750", "+442071838750"), ("Anonymous", "anonymous"), ("not a number", "anonymous")],
)
def test_the_caller_number_is_validated_then_encrypted_for_this_call(
    webhook: Webhook, sent: str, bucket: str
) -> None:
    sid = new_call_sid()
    card = webhook.transit.seal(b"1234", f"{sid}:card_last4".encode())
    pairs = [(k, sent if k == "From" else v) for k, v in base_params(sid)]
    twiml(signed_post(webhook.client, TOKEN, BASE + pin_path(card), [*pairs, ("Digits", "4321")]))
    assert (bucket.encode(), f"{sid}:caller".encode()) in webhook.transit.encrypted


def test_a_pin_without_a_well_formed_card_ciphertext_ends_the_call(webhook: Webhook) -> None:
    sid = new_call_sid()
    root = twiml(webhook.post("/voice/pin?card=1234", sid, Digits="4321"))
    assert hangs_up(root) and spoken(root) == texts.CALL_AGAIN
    assert webhook.backend.requests == [] and webhook.transit.encrypted == []


def test_a_bad_pin_entry_reprompts_and_keeps_the_card(webhook: Webhook) -> None:
    sid = new_call_sid()
    card = webhook.transit.seal(b"1234", f"{sid}:card_last4".encode())
    root = twiml(webhook.post(pin_path(card, age=60), sid, Digits="43"))
    assert spoken(root) == f"Sorry, that was not 4 digits. {texts.ASK_PIN}"
    again = query(gather_action(root))
    assert (again["card"], again["attempt"], again["registered"]) == ([card], ["2"], ["1"])
    assert abs(int(again["issued"][0]) - time.time()) < 5  # issued afresh
    assert webhook.backend.requests == []


# -- nothing becomes a 5xx ---------------------------------------------------------------


def test_a_call_without_a_call_sid_hears_a_calm_goodbye(webhook: Webhook) -> None:
    pairs = [("AccountSid", "AC" + "0" * 32), ("Digits", "1234")]
    root = twiml(signed_post(webhook.client, TOKEN, BASE + "/voice/card", pairs))
    assert hangs_up(root) and spoken(root) == texts.TRY_LATER


@pytest.mark.parametrize(
    "failure",
    [
        VaultUnavailable("transit encrypt: cannot reach Vault"),
        RuntimeError("a bug"),
        KeyError("Digits"),
    ],
)
def test_an_exception_becomes_calm_twiml_not_a_5xx(webhook: Webhook, failure: Exception) -> None:
    webhook.transit.fail_with = failure
    root = twiml(webhook.post(CARD_STEP, Digits="1234"))
    assert hangs_up(root) and spoken(root) == texts.TRY_LATER
    if isinstance(failure, VaultUnavailable):
        assert webhook.metric("ivr_vault_errors_total", kind="unavailable") == 1
