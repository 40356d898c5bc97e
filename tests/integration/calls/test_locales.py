"""Whole calls in each locale on the real stack (OpenBao, backend and webhook processes).

Two stacks: one whose Japanese number (LOCALE_BY_NUMBER) answers in Japanese and whose
balances are yen (BALANCE_CURRENCY=JPY), one with the language menu (LANGUAGE_MENU). Every
document the webhook answers is checked against what Twilio documents for ``<Say>`` and
``<Gather>`` (the verbs, attributes and SSML tags of twilio-python's TwiML classes, which
are generated from Twilio's TwiML definitions), and every ``<Say>`` for its locale's
language and voice.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from twilio.twiml import voice_response as vr

from service.backend.enrolment import Enrolment, add_account
from service.devtools.caller import REGISTERED, Caller
from service.devtools.devstack import DevVault
from service.vault.bootstrap import RoleCredentials
from service.webhook.locales.registry import CATALOGS
from tests.support.stack import Stack, cli_call, make_stack

JA_NUMBER = "+81312345678"
US_NUMBER = "+15005550001"
YEN_ACCOUNT = ("AC24681357", "1255", "97531864", "8642", "5813")  # account, balance, number,
# card, PIN
EN, JA = CATALOGS["en-US"], CATALOGS["ja-JP"]
VOICE = {"en-US": "Polly.Joanna", "ja-JP": "Polly.Mizuki"}


def _attributes(method: object) -> set[str]:
    """The XML attribute names a twilio-python TwiML method accepts."""
    from twilio.twiml import TwiML, lower_camel

    params = inspect.signature(method).parameters  # type: ignore[arg-type]
    return {
        lower_camel(TwiML.MAP.get(name, name))
        for name in params
        if name not in ("self", "kwargs", "message", "words")
    }


# What Twilio documents: the verbs this service may answer with, their attributes, and the
# SSML children of <Say> (twilio-python's Say methods: break, emphasis, lang, p, phoneme,
# prosody, s, say-as, sub, w).
DOCUMENTED: dict[str, set[str]] = {
    "Response": set(),
    "Say": _attributes(vr.VoiceResponse.say),
    "Gather": _attributes(vr.VoiceResponse.gather),
    "Hangup": set(),
    "say-as": _attributes(vr.Say.say_as),
}
SSML_OF_SAY = {
    name.rstrip("_").replace("_", "-")
    for name, value in vars(vr.Say).items()
    if inspect.isfunction(value) and not name.startswith("__")
}


def check_document(document: str, language: str) -> list[ET.Element]:
    """Well-formed TwiML, only documented verbs, attributes and SSML; every <Say> in
    ``language`` with that locale's voice. Returns the <Say>s."""
    assert document.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(document)
    assert root.tag == "Response"
    says = []
    for element in root.iter():
        assert element.tag in DOCUMENTED, element.tag
        assert set(element.attrib) <= DOCUMENTED[element.tag], (element.tag, element.attrib)
        if element.tag == "Say":
            says.append(element)
            for child in element:
                assert child.tag in SSML_OF_SAY, child.tag
    for say in says:
        assert (say.get("language"), say.get("voice")) == (language, VOICE[language])
    for say_as in root.iter("say-as"):
        assert say_as.attrib == {"interpret-as": "characters"}
    return says


class Recorder:
    """The webhook's answers, in order (an httpx response hook)."""

    def __init__(self) -> None:
        self.documents: list[str] = []

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        if response.status_code == 200:
            self.documents.append(response.text)


def call(
    stack: Stack, entries: list[str], identify: str = REGISTERED, **how: str
) -> tuple[list[str], list[str]]:
    """One whole call (identified by ``identify``: an account number, or star from the
    demo's registered number): what the caller heard and every TwiML document answered."""
    recorder = Recorder()
    with httpx.Client(timeout=10, event_hooks={"response": [recorder]}) as client:
        result = Caller(
            stack.webhook.url, stack.twilio_token, client, say=lambda _: None, identify=identify
        ).play(entries, **how)
    assert result.completed and set(result.statuses) == {200}
    return result.heard, recorder.documents


@pytest.fixture(scope="module")
def numbers(
    dev_vault: DevVault,
    credentials: dict[str, RoleCredentials],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    yen = {"BALANCE_CURRENCY": "JPY"}
    running = make_stack(
        dev_vault,
        credentials,
        tmp_path_factory.mktemp("locales"),
        webhook_env={**yen, "LOCALE_BY_NUMBER": f"{JA_NUMBER}=ja-JP"},
        backend_env=yen,
    )
    add_account(running.backend_settings(), Enrolment(*YEN_ACCOUNT))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def menu(
    dev_vault: DevVault,
    credentials: dict[str, RoleCredentials],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    running = make_stack(
        dev_vault,
        credentials,
        tmp_path_factory.mktemp("menu"),
        webhook_env={"LANGUAGE_MENU": "ja-JP,en-US"},
    )
    yield running
    running.stop()


@pytest.mark.parametrize(
    ("to", "language", "found"),
    [
        (
            JA_NUMBER,
            "ja-JP",
            "ありがとうございます。お客様のアカウント番号はAC24681357、残高は1,255円です。",
        ),
        (
            US_NUMBER,
            "en-US",
            "Thank you. Your account number is AC24681357 and your balance is 1,255 yen",
        ),
    ],
)
def test_a_whole_call_in_the_called_numbers_locale(
    numbers: Stack, to: str, language: str, found: str
) -> None:
    _, _, number, card, pin = YEN_ACCOUNT
    heard, documents = call(numbers, [card, pin], number, to=to)
    catalog = CATALOGS[language]
    assert heard == [
        catalog.text("ask_account", digits="8"),
        catalog.text("ask_card"),
        catalog.text("ask_pin"),
        found,
    ]
    assert [len(check_document(d, language)) for d in documents] == [1, 1, 1, 1]
    # The label is read character by character; the typed digits are never read back.
    result = ET.fromstring(documents[-1]).find("Say")
    assert result is not None and [e.text for e in result] == ["AC24681357"]
    assert number not in documents[-1]
    assert card not in documents[-1] and pin not in documents[-1]


def test_japanese_retries_wrong_pins_and_goodbyes(numbers: Stack) -> None:
    _, _, number, card, _ = YEN_ACCOUNT
    heard, documents = call(numbers, ["12", card, "0000"], number, to=JA_NUMBER)
    assert heard == [
        JA.text("ask_account", digits="8"),
        JA.text("ask_card"),
        JA.text("retry"),
        JA.text("ask_card"),
        JA.text("ask_pin"),
        JA.text("not_found"),
    ]
    for document in documents:
        check_document(document, "ja-JP")
    heard, documents = call(numbers, ["", "", ""], number, to=JA_NUMBER)
    assert heard[-1] == JA.text("too_many_tries")
    for document in documents:
        check_document(document, "ja-JP")


def test_an_expired_step_is_said_in_the_numbers_locale(numbers: Stack) -> None:
    caller = Caller(numbers.webhook.url, numbers.twilio_token, httpx.Client(timeout=10))
    try:
        response = caller.post(
            numbers.webhook.url + "/voice/pin?card=vault%3Av1%3Ax&issued=1",
            {"CallSid": "CA" + "0" * 32, "To": JA_NUMBER, "Digits": "4321"},
        )
    finally:
        caller.client.close()
    says = check_document(response.text, "ja-JP")
    assert ["".join(s.itertext()) for s in says] == [JA.text("call_again")]


@pytest.mark.parametrize(
    ("lang", "language"), [("ja-JP", "ja-JP"), ("en-US", "en-US"), (None, "en-US")]
)
def test_the_language_menu_and_the_choice_carried_in_the_signed_url(
    menu: Stack, lang: str | None, language: str
) -> None:
    heard, documents = call(menu, ["1234", "4321"], **({"lang": lang} if lang else {}))
    # The menu: each option a <Say> in its own language and voice, keys in order.
    menu_root = ET.fromstring(documents[0])
    options = menu_root.iter("Say")
    assert [(s.get("language"), s.get("voice"), s.text) for s in options] == [
        ("ja-JP", "Polly.Mizuki", "日本語は1を押してください。"),
        ("en-US", "Polly.Joanna", "For English press 2."),
    ]
    for element in menu_root.iter():
        assert element.tag in DOCUMENTED and set(element.attrib) <= DOCUMENTED[element.tag]
    catalog = CATALOGS[language]
    demo = catalog.text("found", account="AC12345678", balance="12.55")
    assert heard[2:] == [
        catalog.text("ask_account", digits="8"),
        catalog.text("ask_card"),
        catalog.text("ask_pin"),
        demo,
    ]
    actions = []
    for document in documents[1:]:
        check_document(document, language)
        gather = ET.fromstring(document).find("Gather")
        if gather is not None:
            actions.append(parse_qs(urlsplit(gather.attrib["action"]).query).get("lang"))
    # Chosen in the menu: every next action URL carries it. Not chosen: none does, and
    # the call goes on in the number's locale.
    assert actions == ([[lang]] * 3 if lang else [None] * 3)


def test_the_menu_key_is_logged_as_the_locale_it_chose(menu: Stack) -> None:
    before = menu.webhook.stderr_path.read_text(encoding="utf-8")
    call(menu, ["1234", "4321"], lang="en-US")  # key 2
    call(menu, ["1234", "4321"])  # no key
    # The server writes the access line after the response: give it a moment.
    deadline = time.monotonic() + 10
    while True:
        written = menu.webhook.stderr_path.read_text(encoding="utf-8")[len(before) :]
        lines = [json.loads(line) for line in written.splitlines() if line.startswith("{")]
        chosen = [
            (line.get("outcome"), line.get("locale"))
            for line in lines
            if line.get("route") == "/voice/language"
        ]
        if len(chosen) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert chosen == [("language_chosen", "en-US"), ("language_default", "en-US")]
    assert not any("Digits" in json.dumps(line) for line in lines)


def test_a_choice_outside_the_menu_is_not_honoured(menu: Stack) -> None:
    caller = Caller(menu.webhook.url, menu.twilio_token, httpx.Client(timeout=10))
    try:
        response = caller.post(
            menu.webhook.url + "/voice/card?registered=1&lang=fr-FR",
            {"CallSid": "CA" + "1" * 32, "To": US_NUMBER, "Digits": "12"},
        )
    finally:
        caller.client.close()
    says = check_document(response.text, "en-US")
    assert ["".join(s.itertext()) for s in says] == [EN.text("retry"), EN.text("ask_card")]


def test_the_simulator_shows_what_a_caller_of_a_number_hears(
    numbers: Stack, tmp_path: Path
) -> None:
    _, _, number, card, pin = YEN_ACCOUNT
    done = cli_call(
        numbers,
        tmp_path,
        "--to",
        JA_NUMBER,
        "--account-number",
        number,
        "--card",
        card,
        "--pin",
        pin,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[language=ja-JP voice=Polly.Mizuki]",
        JA.text("ask_account", digits="8"),
        JA.text("ask_card"),
        JA.text("ask_pin"),
        "ありがとうございます。お客様のアカウント番号はAC24681357、残高は1,255円です。",
    ]


def test_the_simulator_answers_the_menu_with_lang(menu: Stack, tmp_path: Path) -> None:
    done = cli_call(menu, tmp_path, "--lang", "ja-JP", "--card", "1234", "--pin", "4321")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[language=ja-JP voice=Polly.Mizuki]",
        "日本語は1を押してください。",
        "[language=en-US voice=Polly.Joanna]",
        "For English press 2.",
        "[language=ja-JP voice=Polly.Mizuki]",
        JA.text("ask_account", digits="8"),
        JA.text("ask_card"),
        JA.text("ask_pin"),
        JA.text("found", account="AC12345678", balance="12.55"),
    ]


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"LOCALE": "fr-FR"}, "LOCALE: 'fr-FR' is not a locale this service speaks (en-US, ja-JP)"),
        (
            {"LOCALE_VOICES": "ja-JP=Polly.Joanna", "LOCALE_BY_NUMBER": f"{JA_NUMBER}=ja-JP"},
            "LOCALE_VOICES: Polly.Joanna speaks en-US, not ja-JP; Twilio would fail every <Say> "
            "in that pair",
        ),
    ],
)
def test_the_webhook_refuses_to_start_with_a_bad_locale_setting(
    numbers: Stack, tmp_path: Path, env: dict[str, str], line: str
) -> None:
    """The real `serve webhook`, not only its --check: it exits 2 with one line before
    it listens."""
    done = subprocess.run(
        [sys.executable, "-m", "service", "serve", "webhook"],
        env={**numbers.webhook.env, **env, "HOME": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == f"ivr-vault: configuration error: {line}\n"


def test_accounts_add_refuses_a_yen_balance_with_cents(numbers: Stack, tmp_path: Path) -> None:
    """Enrolment with BALANCE_CURRENCY=JPY: 12.55 is refused in one line, exit 2, before
    Vault or the store; 1255 is what a yen balance looks like."""
    env = {**numbers.backend.env, "HOME": str(tmp_path)}
    before = numbers.store_path.read_bytes()
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "accounts",
            "add",
            "--account",
            "AC13572468",
            "--balance",
            "12.55",
        ],
        input="86420135\n9753\n2864\n\n",
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert refused.stderr == (
        "ivr-vault: balance: JPY has no minor units; write a whole number such as 1255\n"
    )
    assert numbers.store_path.read_bytes() == before
