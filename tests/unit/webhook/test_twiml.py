"""TwiML documents: valid XML, the Gather Twilio needs, and the tutorial's wording.

The tutorial's prompts (reference/000_6d8fbaa8b5ff7101.txt) are quoted here verbatim, so a
rewording of the prompts is a deliberate change that shows up in review.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.webhook import twiml
from service.webhook.locales.registry import CATALOGS

SAY = {"language": "en-US", "voice": "Polly.Joanna"}

TUTORIAL = {
    "card": "Please enter last 4 digits of your payment card number.",
    "pin": "Please enter your unique 4 digit identification number",
    "found": "Thank you. Your account number is {account} and your balance is {balance}",
    "not_found": "We were not able to locate you in our system. Goodbye.",
}


def parse(document: str) -> ET.Element:
    assert document.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(document)
    assert root.tag == "Response"
    return root


def test_prompts_are_worded_as_in_the_tutorial() -> None:
    assert TUTORIAL["card"] == twiml.ASK_CARD
    assert TUTORIAL["pin"] == twiml.ASK_PIN
    assert TUTORIAL["not_found"] == twiml.NOT_FOUND
    assert TUTORIAL["not_found"] == twiml.LOCKED  # no oracle for someone guessing PINs
    root = parse(twiml.account_found(TUTORIAL["found"], "AC12345678", "12.55", SAY))
    assert ["".join(say.itertext()) for say in root.iter("Say")] == [
        TUTORIAL["found"].format(account="AC12345678", balance="12.55")
    ]


def test_the_account_label_is_read_character_by_character() -> None:
    document = twiml.account_found(TUTORIAL["found"], "AC12345678", "12.55", SAY)
    assert document == (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        '<Say language="en-US" voice="Polly.Joanna">Thank you. Your account number is '
        '<say-as interpret-as="characters">AC12345678</say-as> and your balance is 12.55'
        "</Say><Hangup /></Response>"
    )


def test_the_first_prompt_asks_for_the_account_number_or_star() -> None:
    assert twiml.ask_account(8) == (
        "Please enter your 8-digit account number. If you are calling from the phone "
        "registered on your account, press star."
    )
    root = parse(
        twiml.gather(
            twiml.ask_account(8),
            "/voice/account",
            say=SAY,
            digits=8,
            finish_on_key=twiml.REGISTERED_KEY,
        )
    )
    (gather,) = list(root)
    assert (gather.attrib["numDigits"], gather.attrib["finishOnKey"]) == ("8", "*")


def test_gather_asks_for_four_dtmf_digits() -> None:
    root = parse(twiml.gather(twiml.ASK_CARD, twiml.action_url("/voice/card"), say=SAY, digits=4))
    (gather,) = list(root)
    assert gather.tag == "Gather"
    assert gather.attrib == {
        "input": "dtmf",
        "numDigits": "4",
        "timeout": "10",
        "action": "/voice/card",
        "method": "POST",
        "actionOnEmptyResult": "true",
    }
    assert [(say.tag, say.text, say.attrib) for say in gather] == [("Say", twiml.ASK_CARD, SAY)]


def test_en_us_is_todays_document_with_language_and_voice_added() -> None:
    """Byte for byte what the webhook answered before locales, but for the attributes."""
    assert twiml.gather(twiml.ASK_CARD, "/voice/card", say=SAY, digits=4) == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Gather action="/voice/card" '
        'actionOnEmptyResult="true" input="dtmf" method="POST" numDigits="4" timeout="10">'
        '<Say language="en-US" voice="Polly.Joanna">Please enter last 4 digits of your '
        "payment card number.</Say></Gather></Response>"
    )


def test_retry_prefaces_the_prompt() -> None:
    root = parse(twiml.gather(twiml.ASK_PIN, "/voice/pin", digits=4, preface=twiml.RETRY, say=SAY))
    assert [say.text for say in root.iter("Say")] == [
        "Sorry, that was not 4 digits.",
        twiml.ASK_PIN,
    ]


def test_ciphertext_in_the_action_url_survives_the_xml_round_trip() -> None:
    ciphertext = "vault:v12:AB+cd/EF=="
    action = twiml.action_url("/voice/pin", card=ciphertext, attempt=2)
    assert action == "/voice/pin?card=vault%3Av12%3AAB%2Bcd%2FEF%3D%3D&attempt=2"
    gather = parse(twiml.gather(twiml.ASK_PIN, action, say=SAY, digits=4)).find("Gather")
    assert gather is not None
    query = parse_qs(urlsplit(gather.attrib["action"]).query)
    assert query == {"card": [ciphertext], "attempt": ["2"]}
    assert twiml.action_url("/voice") == "/voice"


@pytest.mark.parametrize(
    "text", [twiml.NOT_FOUND, twiml.TRY_LATER, twiml.CALL_AGAIN, twiml.TOO_MANY_TRIES]
)
def test_goodbyes_say_then_hang_up(text: str) -> None:
    root = parse(twiml.say_and_hang_up(text, SAY))
    assert [(verb.tag, verb.text) for verb in root] == [("Say", text), ("Hangup", None)]
    assert root[0].attrib == SAY


def test_text_is_escaped_not_interpreted() -> None:
    root = parse(twiml.account_found(TUTORIAL["found"], "AC1<Hangup/>&", "1 & 2", SAY))
    (say, hangup) = list(root)
    assert "".join(say.itertext()) == (
        "Thank you. Your account number is AC1<Hangup/>& and your balance is 1 & 2"
    )
    assert hangup.tag == "Hangup"


def test_the_menu_speaks_each_option_in_its_own_language() -> None:
    ja = {"language": "ja-JP", "voice": "Polly.Mizuki"}
    root = parse(
        twiml.menu(
            [("日本語は1を押してください。", ja), ("For English press 2.", SAY)], "/voice/language"
        )
    )
    (gather,) = list(root)
    assert gather.attrib == {
        "input": "dtmf",
        "numDigits": "1",
        "timeout": "10",
        "action": "/voice/language",
        "method": "POST",
        "actionOnEmptyResult": "true",
    }
    assert [(say.text, say.attrib) for say in gather] == [
        ("日本語は1を押してください。", ja),
        ("For English press 2.", SAY),
    ]


# Byte identity of the filled-in documents with VoiceResponse's (twiml.render_*), for every
# document, both locales' sentences and voices, and values that XML must escape.
LOCALES = st.sampled_from(sorted(CATALOGS))
# Action URLs as the webhook makes them (urlencode: "&" between parameters) and anything
# else: markup, quotes, whitespace entities, non-ASCII, lone surrogates.
URL_TEXT = st.one_of(
    st.builds(
        twiml.action_url,
        st.sampled_from(["/voice/account", "/voice/card", "/voice/pin"]),
        card=st.text(),
        attempt=st.integers(1, 99),
        lang=st.sampled_from(sorted(CATALOGS)),
    ),
    st.text(alphabet=st.sampled_from("&<>\"'\r\n\t =?/%;#\ue000ab"), max_size=30),
    st.text(alphabet=st.characters(codec=None, exclude_categories=())),
    st.text(alphabet=st.one_of(st.characters(categories=["Cs"]), st.sampled_from("a&\u00e9"))),
)


def _say(tag: str, data: st.DataObject) -> dict[str, str]:
    return {"language": tag, "voice": data.draw(st.sampled_from(CATALOGS[tag].voices))}


@settings(max_examples=400, deadline=None)
@given(tag=LOCALES, action=URL_TEXT, data=st.data())
def test_gather_is_byte_identical_to_voice_response(
    tag: str, action: str, data: st.DataObject
) -> None:
    messages = CATALOGS[tag].messages
    prompt = data.draw(
        st.sampled_from(["ask_card", "ask_pin", "ask_account"]).map(
            lambda key: messages[key].format(digits="8")
        )
    )
    options = {
        "say": _say(tag, data),
        "digits": data.draw(st.sampled_from([1, 4, 8, 12])),
        "finish_on_key": data.draw(st.sampled_from([None, "*", "#"])),
        "preface": data.draw(st.sampled_from([None, messages["retry"], ""])),
    }
    fast = twiml.gather(prompt, action, **options)  # type: ignore[arg-type]
    assert fast == twiml.render_gather(prompt, action, **options)  # type: ignore[arg-type]
    assert fast == twiml.gather(prompt, action, **options)  # type: ignore[arg-type]  # cached


@settings(max_examples=300, deadline=None)
@given(
    tag=LOCALES,
    account=st.one_of(st.just("AC12345678"), URL_TEXT),
    balance=st.one_of(st.just("12.55"), URL_TEXT),
    data=st.data(),
)
def test_account_found_is_byte_identical_to_voice_response(
    tag: str, account: str, balance: str, data: st.DataObject
) -> None:
    sentence = CATALOGS[tag].messages["found"]
    say = _say(tag, data)
    assert twiml.account_found(sentence, account, balance, say) == (
        twiml.render_account_found(sentence, account, balance, say)
    )


@settings(max_examples=100, deadline=None)
@given(tag=LOCALES, key=st.sampled_from(["not_found", "try_later", "call_again"]), data=st.data())
def test_goodbyes_are_byte_identical_to_voice_response(
    tag: str, key: str, data: st.DataObject
) -> None:
    text, say = CATALOGS[tag].messages[key], _say(tag, data)
    assert twiml.say_and_hang_up(text, say) == twiml.render_say_and_hang_up(text, say)
    options = [
        (catalog.messages["menu_option"].format(digit=str(n)), _say(other, data))
        for n, (other, catalog) in enumerate(CATALOGS.items(), start=1)
    ]
    assert twiml.menu(options, "/voice/language") == (twiml.render_menu(options, "/voice/language"))


def test_a_value_is_filled_in_escaped_as_voice_response_escapes_it() -> None:
    """The case the property test must cover, written out: an action URL joining its
    parameters with "&" and a value holding markup."""
    action = twiml.action_url("/voice/pin", card='x"/><Hangup/>', attempt=2)
    document = twiml.gather(twiml.ASK_PIN, action, say=SAY, digits=4)
    assert 'action="/voice/pin?card=x%22%2F%3E%3CHangup%2F%3E&amp;attempt=2"' in document
    assert twiml.gather(twiml.ASK_PIN, 'a&b"<c>\n', say=SAY, digits=4) == (
        twiml.render_gather(twiml.ASK_PIN, 'a&b"<c>\n', say=SAY, digits=4)
    )
    assert 'action="a&amp;b&quot;&lt;c&gt;&#10;"' in twiml.gather(
        twiml.ASK_PIN, 'a&b"<c>\n', say=SAY, digits=4
    )
