"""TwiML documents the caller hears. Pure functions: text in, XML string out.

The prompts are worded as in the Twilio tutorial this service replaces.
"""

from __future__ import annotations

from urllib.parse import urlencode

from twilio.twiml.voice_response import VoiceResponse

ASK_ACCOUNT = ("Please enter your {digits}-digit account number. If you are calling from "
               "the phone registered on your account, press star.")
ASK_CARD = "Please enter last 4 digits of your payment card number."
ASK_PIN = "Please enter your unique 4 digit identification number"
NOT_FOUND = "We were not able to locate you in our system. Goodbye."
_RETRY = "Sorry, that was not {digits} digits."
RETRY = _RETRY.format(digits=4)  # the card and the PIN
# The key that says "I am calling from my registered phone" at the first prompt.
REGISTERED_KEY = "*"
TOO_MANY_TRIES = "Sorry, we could not get your entry. Please call again later. Goodbye."
TRY_LATER = ("We are sorry, we cannot complete your request right now. "
             "Please call again later. Goodbye.")
CALL_AGAIN = "We are sorry, your session has expired. Please call again. Goodbye."
LOCKED = NOT_FOUND  # a locked card hears the generic message: no oracle for guessers

GATHER_TIMEOUT_S = 10


def action_url(path: str, **query: str | int) -> str:
    """A relative action URL; Twilio resolves it against the URL it just called, so the
    same TwiML works behind any proxy or hostname."""
    return path + ("?" + urlencode(query) if query else "")


def ask_account(digits: int) -> str:
    return ASK_ACCOUNT.format(digits=digits)


def retry(digits: int) -> str:
    return _RETRY.format(digits=digits)


def gather(prompt: str, action: str, *, digits: int, finish_on_key: str | None = None,
           preface: str | None = None) -> str:
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
        g.say(preface)
    g.say(prompt)
    return str(response)


def say_and_hang_up(text: str) -> str:
    response = VoiceResponse()
    response.say(text)
    response.hangup()
    return str(response)


def account_found(account: str, balance: str) -> str:
    return say_and_hang_up(
        f"Thank you. Your account number is {account} and your balance is {balance}")
