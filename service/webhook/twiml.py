"""TwiML documents the caller hears. Pure functions: text in, XML string out.

The sentences come from a locale's catalog (service/webhook/locales/); every ``<Say>``
carries that locale's ``language`` and ``voice`` (``say``: the attributes). The constants
below are the en-US sentences, worded as in the Twilio tutorial this service replaces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlencode

from twilio.twiml.voice_response import VoiceResponse

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
    response = VoiceResponse()
    options = {} if finish_on_key is None else {"finish_on_key": finish_on_key}
    g = response.gather(
        input="dtmf",
        num_digits=digits,
        timeout=GATHER_TIMEOUT_S,
        action=action,
        method="POST",
        action_on_empty_result=True,
        **options,
    )
    if preface:
        g.say(preface, **say)
    g.say(prompt, **say)
    return str(response)


def menu(options: Sequence[tuple[str, SayAttributes]], action: str) -> str:
    """The language menu: one key, each option a ``<Say>`` in its own language. No key
    still posts to ``action``, which then goes on in the called number's locale."""
    response = VoiceResponse()
    g = response.gather(
        input="dtmf",
        num_digits=1,
        timeout=GATHER_TIMEOUT_S,
        action=action,
        method="POST",
        action_on_empty_result=True,
    )
    for text, say in options:
        g.say(text, **say)
    return str(response)


def say_and_hang_up(text: str, say: SayAttributes) -> str:
    response = VoiceResponse()
    response.say(text, **say)
    response.hangup()
    return str(response)


def account_found(sentence: str, account: str, balance: str, say: SayAttributes) -> str:
    """``sentence``: the catalog's, with ``{account}`` and ``{balance}``. The account label
    is read character by character (``AC12345678``: "A C 1 2 ..."), with SSML
    ``<say-as interpret-as="characters">``, which Twilio's Polly and Google voices read."""
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
