"""English (United States): the wording this service has always used, kept word for word
(the demo's expected answer is one constant), the two prompts as in the Twilio tutorial."""

from __future__ import annotations

from types import MappingProxyType

from service.webhook.locales.catalog import Catalog

CATALOG = Catalog(
    tag="en-US",
    name="English",
    # Polly standard voices first: every SSML tag, <say-as> included, works with them
    # (Polly's "Supported SSML tags" table; neural voices support <say-as> partly).
    voices=(
        "Polly.Joanna",
        "Polly.Matthew",
        "Polly.Salli",
        "Polly.Joey",
        "Polly.Ivy",
        "Polly.Justin",
        "Polly.Kendra",
        "Polly.Kimberly",
        "Polly.Joanna-Neural",
        "Polly.Matthew-Neural",
        "Google.en-US-Standard-C",
        "Google.en-US-Standard-D",
        "Google.en-US-Wavenet-C",
        "Google.en-US-Wavenet-D",
    ),
    messages=MappingProxyType(
        {
            "menu_option": "For English press {digit}.",
            # The identification step's first prompt (docs/security.md, identification); the count
            # follows
            # ACCOUNT_NUMBER_DIGITS.
            "ask_account": (
                "Please enter your {digits}-digit account number. If you are "
                "calling from the phone registered on your account, press star."
            ),
            "ask_card": "Please enter last 4 digits of your payment card number.",
            "ask_pin": "Please enter your unique 4 digit identification number",
            "retry_account": "Sorry, that was not {digits} digits.",
            "retry": "Sorry, that was not 4 digits.",
            "too_many_tries": (
                "Sorry, we could not get your entry. Please call again later. Goodbye."
            ),
            "not_found": "We were not able to locate you in our system. Goodbye.",
            "try_later": (
                "We are sorry, we cannot complete your request right now. "
                "Please call again later. Goodbye."
            ),
            "call_again": "We are sorry, your session has expired. Please call again. Goodbye.",
            # {account} is read character by character (SSML say-as), {balance} is one of the
            # amount sentences below.
            "found": "Thank you. Your account number is {account} and your balance is {balance}",
            # BALANCE_CURRENCY unset: the number as enrolled.
            "amount": "{amount}",
            # Polly and Google read "$12.55" as "twelve dollars and fifty-five cents".
            "amount.USD": "${amount}",
            "amount.USD.whole": "${major}",
            "amount.JPY": "{amount} yen",
        }
    ),
)
