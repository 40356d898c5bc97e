"""``Caller`` parsing and signing, against a scripted webhook that checks each request the
way Twilio's own RequestValidator would. (The real webhook is in test_e2e_call.py.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from twilio.request_validator import RequestValidator

from service.devtools.caller import MAX_STEPS, Caller, new_call_sid
from service.formats import CALL_SID

TOKEN = "caller-test-token"
BASE = "http://ivr.test:8080"
XML = '<?xml version="1.0" encoding="UTF-8"?><Response>{}</Response>'

Script = dict[str, Callable[[dict[str, str]], str]]


def gather(action: str, *says: str) -> str:
    inner = "".join(f"<Say>{s}</Say>" for s in says)
    return XML.format(f'<Gather input="dtmf" numDigits="4" action="{action}">{inner}</Gather>')


class Webhook:
    """Answers from a script keyed by path; records (url, form) and checks signatures."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[tuple[str, dict[str, str]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        url = str(request.url)
        self.requests.append((url, form))
        if not RequestValidator(TOKEN).validate(url, form, request.headers["X-Twilio-Signature"]):
            return httpx.Response(403)
        return httpx.Response(
            200,
            text=self.script[request.url.path](form),
            headers={"Content-Type": "application/xml"},
        )


@pytest.fixture
def run() -> Iterator[Callable[..., tuple[Webhook, list[str], bool]]]:
    clients: list[httpx.Client] = []

    def play(
        script: Script,
        entries: list[str],
        token: str = TOKEN,
    ) -> tuple[Webhook, list[str], bool]:
        webhook = Webhook(script)
        client = httpx.Client(transport=httpx.MockTransport(webhook))
        clients.append(client)
        heard: list[str] = []
        result = Caller(BASE, token, client, say=heard.append).play(entries)
        # Status notes in brackets are printed, but are not something the caller heard.
        assert result.heard == [line for line in heard if not line.startswith("[")]
        return webhook, heard, result.completed

    yield play
    for client in clients:
        client.close()


def test_call_sids_look_like_twilio_s_and_are_new_each_time() -> None:
    sids = {new_call_sid() for _ in range(50)}
    assert len(sids) == 50
    assert all(CALL_SID.fullmatch(sid) for sid in sids)


def test_follows_each_gather_with_the_next_entry(
    run: Callable[..., tuple[Webhook, list[str], bool]],
) -> None:
    script: Script = {
        "/voice": lambda f: gather("/voice/card", "card?"),
        "/voice/card": lambda f: gather("pin?card=vault%3Av1%3AAb%2B%3D%3D", "pin?"),
        "/voice/pin": lambda f: XML.format("<Say>done</Say><Hangup/><Say>never</Say>"),
    }
    webhook, heard, completed = run(script, ["1234", "4321"])
    assert completed
    assert heard == ["card?", "pin?", "done"]
    urls = [url for url, _ in webhook.requests]
    # A relative action resolves against the URL just called, query string kept intact.
    assert urls == [
        f"{BASE}/voice",
        f"{BASE}/voice/card",
        f"{BASE}/voice/pin?card=vault%3Av1%3AAb%2B%3D%3D",
    ]
    forms = [form for _, form in webhook.requests]
    assert "Digits" not in forms[0]
    assert [forms[1]["Digits"], forms[2]["Digits"]] == ["1234", "4321"]
    assert len({form["CallSid"] for form in forms}) == 1
    assert all(form["AccountSid"].startswith("AC") for form in forms)


def test_a_silent_caller_sends_empty_digits_and_redirects_carry_none(
    run: Callable[..., tuple[Webhook, list[str], bool]],
) -> None:
    script: Script = {
        "/voice": lambda f: XML.format("<Say>hello</Say><Redirect>/voice/card</Redirect>"),
        "/voice/card": lambda f: (
            gather("/voice/card2", "again?")
            if "Digits" not in f
            else XML.format(f"<Say>got [{f['Digits']}]</Say>")
        ),
        "/voice/card2": lambda f: XML.format(f"<Say>then [{f['Digits']}]</Say><Hangup/>"),
    }
    _, heard, completed = run(script, [])
    assert heard == ["hello", "again?", "then []"]
    assert completed


def test_a_refused_request_ends_the_call_uncompleted(
    run: Callable[..., tuple[Webhook, list[str], bool]],
) -> None:
    webhook, heard, completed = run(
        {"/voice": lambda f: gather("/x", "no")}, ["1234"], token="wrong-token"
    )
    assert not completed
    assert heard == ["[webhook answered HTTP 403]"]
    assert len(webhook.requests) == 1


def test_an_endless_loop_is_cut_off(
    run: Callable[..., tuple[Webhook, list[str], bool]],
) -> None:
    script: Script = {"/voice": lambda f: gather("/voice", "again")}
    webhook, heard, completed = run(script, ["1"] * 50)
    assert not completed
    assert len(webhook.requests) == MAX_STEPS
    assert heard[-1] == "[too many steps; giving up]"


def test_a_document_without_gather_or_hangup_ends_the_call(
    run: Callable[..., tuple[Webhook, list[str], bool]],
) -> None:
    _, heard, completed = run({"/voice": lambda f: XML.format("<Say>bye</Say>")}, [])
    assert (heard, completed) == (["bye"], True)


JA = 'language="ja-JP" voice="Polly.Mizuki"'
EN = 'language="en-US" voice="Polly.Joanna"'
MENU = XML.format(
    f'<Gather input="dtmf" numDigits="1" action="/voice/language">'
    f"<Say {JA}>日本語は1を押してください。</Say>"
    f"<Say {EN}>For English press 2.</Say></Gather>"
)


def _menu_script() -> Script:
    return {
        "/voice": lambda f: MENU,
        "/voice/language": lambda f: gather(
            "/voice/card?lang=ja-JP" if f["Digits"] == "1" else "/voice/card",
            "card?" if f["Digits"] != "1" else "カード?",
        ),
        "/voice/card": lambda f: XML.format(
            f'<Say {JA}>番号は<say-as interpret-as="characters">AC12</say-as>です。</Say>'
        ),
    }


@pytest.mark.parametrize(
    ("lang", "key", "prompt"),
    [
        ("ja-JP", "1", "カード?"),
        ("en-US", "2", "card?"),
        (None, "", "card?"),
        ("fr-FR", "", "card?"),
    ],
)
def test_the_menu_is_answered_with_the_key_of_lang_and_takes_no_entry(
    lang: str | None, key: str, prompt: str
) -> None:
    webhook = Webhook(_menu_script())
    with httpx.Client(transport=httpx.MockTransport(webhook)) as client:
        result = Caller(BASE, TOKEN, client, say=lambda _: None).play(
            ["1234"], lang=lang, to="+81312345678"
        )
    assert [form.get("Digits") for _, form in webhook.requests] == [None, key, "1234"]
    assert {form["To"] for _, form in webhook.requests} == {"+81312345678"}
    assert result.heard[2] == prompt


def test_a_say_is_heard_whole_with_its_language_and_voice() -> None:
    webhook = Webhook(_menu_script())
    printed: list[str] = []
    with httpx.Client(transport=httpx.MockTransport(webhook)) as client:
        result = Caller(BASE, TOKEN, client, say=printed.append, show_voice=True).play(
            ["1234"], lang="ja-JP"
        )
    assert result.heard[-1] == "番号はAC12です。"  # the say-as child's text included
    assert printed == [
        "[language=ja-JP voice=Polly.Mizuki]",
        "日本語は1を押してください。",
        "[language=en-US voice=Polly.Joanna]",
        "For English press 2.",
        "[language=- voice=-]",
        "カード?",
        "[language=ja-JP voice=Polly.Mizuki]",
        "番号はAC12です。",
    ]
