"""TwiML documents the caller hears. Pure functions: text in, XML string out (each
document's markup rendered once by twilio's VoiceResponse, its values filled in per call).

The sentences come from a locale's catalog (service/webhook/locales/); every ``<Say>``
carries that locale's ``language`` and ``voice`` (``say``: the attributes). The constants
below are the en-US sentences, worded as in the Twilio tutorial this service replaces.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode

from twilio.twiml.voice_response import Gather, VoiceResponse

from service.webhook.locales.en_us import CATALOG as EN_US

ASK_ACCOUNT = EN_US.messages["ask_account"]  # with {digits}
ASK_CARD = EN_US.messages["ask_card"]
ASK_PIN = EN_US.messages["ask_pin"]
NOT_FOUND = EN_US.messages["not_found"]
RETRY = EN_US.messages["retry"]  # the card and the PIN
RETRY_ACCOUNT = EN_US.messages["retry_account"]  # with {digits}
TOO_MANY_TRIES = EN_US.messages["too_many_tries"]
TRY_LATER = EN_US.messages["try_later"]
CALL_AGAIN = EN_US.messages["call_again"]
FOUND = EN_US.messages["found"]  # with {account} and {balance}
LOCKED = NOT_FOUND  # a locked card hears the generic message: no oracle for guessers
# The key that says "I am calling from my registered phone" at the first prompt.
REGISTERED_KEY = "*"

# A <Say>'s attributes: {"language": "ja-JP", "voice": "Polly.Mizuki"}.
SayAttributes = Mapping[str, str]

GATHER_TIMEOUT_S = 10


def ask_account(digits: int) -> str:
    """The en-US first prompt for an account number of ``digits`` digits."""
    return ASK_ACCOUNT.format(digits=digits)


def action_url(path: str, **query: str | int) -> str:
    """A relative action URL; Twilio resolves it against the URL it just called, so the
    same TwiML works behind any proxy or hostname."""
    return path + ("?" + urlencode(query) if query else "")


# Each document is rendered by twilio's VoiceResponse once per shape (the render_*
# functions below: the source of truth for the markup), with a slot where a value varies;
# a request only joins the pieces around its values, escaped as ElementTree escapes them.
# Building the tree per request was 6.7 % of the webhook's event-loop thread under the card
# step (bench/profiles/webhook-before.md); tests/unit/webhook/test_twiml.py proves the
# joined documents byte-identical to VoiceResponse's for the same inputs.
_SLOT: Final = re.compile("\ue000([a-z]+)\ue000")  # private-use marks: in no sentence


def _slot(name: str) -> str:
    return f"\ue000{name}\ue000"


def _xml_chars(text: str) -> str:
    # ElementTree writes through an encoder with errors="xmlcharrefreplace": a lone
    # surrogate becomes a character reference.
    return text if text.isascii() else text.encode("utf-8", "xmlcharrefreplace").decode()


def escape_attribute(text: str) -> str:
    """An attribute value as ElementTree (so VoiceResponse) writes it."""
    for raw, entity in _ATTRIBUTE_ENTITIES:
        if raw in text:
            text = text.replace(raw, entity)
    return _xml_chars(text)


def escape_text(text: str) -> str:
    """Character data as ElementTree writes it."""
    for raw, entity in _ATTRIBUTE_ENTITIES[:3]:
        if raw in text:
            text = text.replace(raw, entity)
    return _xml_chars(text)


# ElementTree's order ("&" first, so that no entity is escaped twice).
_ATTRIBUTE_ENTITIES: Final = (
    ("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"),
    ("\r", "&#13;"), ("\n", "&#10;"), ("\t", "&#09;"),
)  # fmt: skip


@dataclass(frozen=True)
class _Template:
    """A rendered document cut at its slots: text, slot name, text, ..., text."""

    pieces: tuple[str, ...]

    @classmethod
    def of(cls, document: str, names: frozenset[str]) -> _Template | None:
        """None when the slots found are not exactly ``names`` once each (a fixed text
        holding a slot mark, or a value VoiceResponse leaves out): render that one whole."""
        pieces = tuple(_SLOT.split(document))
        found = pieces[1::2]
        return cls(pieces) if len(found) == len(names) and set(found) == names else None

    def fill(self, values: Mapping[str, str]) -> str:
        pieces = list(self.pieces)
        pieces[1::2] = [values[name] for name in pieces[1::2]]
        return "".join(pieces)


def _items(say: SayAttributes) -> tuple[tuple[str, str], ...]:
    return tuple(say.items())  # in order: hashable, as VoiceResponse receives them


def gather(
    prompt: str,
    action: str,
    *,
    say: SayAttributes,
    digits: int,
    finish_on_key: str | None = None,
    preface: str | None = None,
) -> str:
    """Ask for ``digits`` keypad digits. An empty result (timeout) still posts to
    ``action``, so the re-prompt logic lives in one place. ``finish_on_key``: a key that
    ends the gather early (Twilio's default, ``#``, when None)."""
    template = _gather_template(prompt, _items(say), digits, finish_on_key, preface)
    if template is None:
        return render_gather(
            prompt, action, say=say, digits=digits, finish_on_key=finish_on_key, preface=preface
        )
    return template.fill({"action": escape_attribute(action)})


@functools.lru_cache(maxsize=256)
def _gather_template(
    prompt: str,
    say: tuple[tuple[str, str], ...],
    digits: int,
    finish_on_key: str | None,
    preface: str | None,
) -> _Template | None:
    document = render_gather(
        prompt,
        _slot("action"),
        say=dict(say),
        digits=digits,
        finish_on_key=finish_on_key,
        preface=preface,
    )
    return _Template.of(document, frozenset({"action"}))


def render_gather(
    prompt: str,
    action: str,
    *,
    say: SayAttributes,
    digits: int,
    finish_on_key: str | None = None,
    preface: str | None = None,
) -> str:
    """:func:`gather`'s document, built by VoiceResponse."""
    response = VoiceResponse()
    options = {} if finish_on_key is None else {"finish_on_key": finish_on_key}
    g = _dtmf_gather(response, action, digits, **options)
    if preface:
        g.say(preface, **say)
    g.say(prompt, **say)
    return str(response)


def _dtmf_gather(response: VoiceResponse, action: str, digits: int, **options: str) -> Gather:
    return response.gather(
        input="dtmf",
        num_digits=digits,
        timeout=GATHER_TIMEOUT_S,
        action=action,
        method="POST",
        action_on_empty_result=True,
        **options,
    )


def menu(options: Sequence[tuple[str, SayAttributes]], action: str) -> str:
    """The language menu: one key, each option a ``<Say>`` in its own language. No key
    still posts to ``action``, which then goes on in the called number's locale."""
    return _menu(tuple((text, _items(say)) for text, say in options), action)


@functools.lru_cache(maxsize=64)
def _menu(options: tuple[tuple[str, tuple[tuple[str, str], ...]], ...], action: str) -> str:
    return render_menu([(text, dict(say)) for text, say in options], action)


def render_menu(options: Sequence[tuple[str, SayAttributes]], action: str) -> str:
    """:func:`menu`'s document, built by VoiceResponse."""
    response = VoiceResponse()
    g = _dtmf_gather(response, action, 1)
    for text, say in options:
        g.say(text, **say)
    return str(response)


def say_and_hang_up(text: str, say: SayAttributes) -> str:
    return _say_and_hang_up(text, _items(say))


@functools.lru_cache(maxsize=256)
def _say_and_hang_up(text: str, say: tuple[tuple[str, str], ...]) -> str:
    return render_say_and_hang_up(text, dict(say))


def render_say_and_hang_up(text: str, say: SayAttributes) -> str:
    """:func:`say_and_hang_up`'s document, built by VoiceResponse."""
    response = VoiceResponse()
    response.say(text, **say)
    response.hangup()
    return str(response)


def account_found(sentence: str, account: str, balance: str, say: SayAttributes) -> str:
    """``sentence``: the catalog's, with ``{account}`` and ``{balance}``. The account label
    is read character by character (``AC12345678``: "A C 1 2 ..."), with SSML
    ``<say-as interpret-as="characters">``, which Twilio's Polly and Google voices read."""
    template = _found_template(sentence, _items(say)) if account else None
    if template is None:  # an empty label: VoiceResponse writes an empty <say-as />
        return render_account_found(sentence, account, balance, say)
    return template.fill({"account": escape_text(account), "balance": escape_text(balance)})


@functools.lru_cache(maxsize=64)
def _found_template(sentence: str, say: tuple[tuple[str, str], ...]) -> _Template | None:
    document = render_account_found(sentence, _slot("account"), _slot("balance"), dict(say))
    return _Template.of(document, frozenset({"account", "balance"}))


def render_account_found(sentence: str, account: str, balance: str, say: SayAttributes) -> str:
    """:func:`account_found`'s document, built by VoiceResponse."""
    before, after = sentence.split("{account}", 1)
    response = VoiceResponse()
    spoken = response.say(before.format(balance=balance), **say)
    spoken.say_as(account, interpret_as="characters")
    spoken.append(after.format(balance=balance))
    response.hangup()
    return str(response)


def redirect(action: str) -> str:
    """Twilio requests ``action`` (POST, with the call's parameters and no ``Digits``) and
    goes on with what it answers; the caller hears nothing meanwhile."""
    response = VoiceResponse()
    response.redirect(action, method="POST")
    return str(response)
