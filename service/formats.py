"""The shapes that travel between the parts, each written once: a CallSid, a caller's entry,
a Transit ciphertext or HMAC.

The webhook, the backend's schema and lookup, the stores, the operator commands and the log
scrubber all check against these. Pure and import-free (but for ``re``), so that the
scrubber may use them without pulling in any service code.
"""

from __future__ import annotations

import re
from typing import Final

# Anchored, so that the same text serves as an OpenAPI ``pattern`` (JSON Schema patterns
# are not anchored by themselves); match with ``fullmatch``: ``$`` alone would allow a
# trailing newline.
CALL_SID_PATTERN: Final = r"^CA[0-9a-f]{32}$"
CALL_SID: Final = re.compile(CALL_SID_PATTERN)

# ``vault:vN:`` opens everything Transit hands out (ciphertexts and HMACs); N is the key
# version, 1 to 999,999,999. A ciphertext goes on with base64.
_VERSION_NUMBER: Final = "[1-9][0-9]{0,8}"
_VERSION: Final = re.compile(rf"vault:v({_VERSION_NUMBER}):")
CIPHERTEXT_PATTERN: Final = rf"^vault:v{_VERSION_NUMBER}:[A-Za-z0-9+/]+={{0,2}}$"
CIPHERTEXT: Final = re.compile(CIPHERTEXT_PATTERN)


def transit_version(output: str) -> int | None:
    """The key version named by the ``vault:vN:`` prefix of any Transit output (an HMAC
    verifier, a ciphertext), or None. Only the prefix is checked."""
    match = _VERSION.match(output)
    return int(match[1]) if match else None


def ciphertext_version(ciphertext: str) -> int | None:
    """Key version of a well-formed Transit ciphertext, or None if it is not one."""
    return transit_version(ciphertext) if CIPHERTEXT.fullmatch(ciphertext) else None


# The card's last digits and the PIN; the account number's length is a setting
# (ACCOUNT_NUMBER_DIGITS).
CARD_DIGITS: Final = 4
PIN_DIGITS: Final = 4


def is_digits(entry: str, count: int) -> bool:
    """Exactly ``count`` ASCII digits. Other scripts' digits are refused, not normalised:
    a caller's keypad only sends 0-9 (``str.isdigit`` alone accepts ``١٢٣٤``)."""
    return len(entry) == count and entry.isascii() and entry.isdigit()


# -- the caller's number (Twilio's ``From``) ------------------------------------------------

# Every withheld, unknown or unrecognisable caller ID counts in this one bucket.
ANONYMOUS_CALLER: Final = "anonymous"
# The longest ``From`` taken as it is; anything longer is not a caller ID Twilio sends.
MAX_CALLER_ID: Final = 256
# How Twilio's ``From`` reads when the caller withholds the number: a word, or that word
# spelled on a keypad (Twilio translated ANONYMOUS, UNAVAILABLE, RESTRICTED and BLOCKED
# into these digit strings; changelog 2022-11-16, "Upcoming changes to withheld caller ID
# behavior for <Dial> calls"). Compared case-insensitively.
WITHHELD_CALLER_IDS: Final = frozenset(
    {
        "",
        "anonymous",
        "restricted",
        "unknown",
        "private",
        "unavailable",
        "blocked",
        "withheld",
        "+266696687",
        "+86282452253",
        "+7378742833",
        "+2562533",
    }
)
# E.164: "+", then a country code that does not start with 0, at most 15 digits in all;
# a Twilio Client identity; a SIP URI. Printable ASCII without spaces after the prefix.
_CALLER_ID: Final = re.compile(r"\+[1-9][0-9]{0,14}|(client|sip):[!-~]+", re.IGNORECASE)


def caller_bucket(from_: str) -> str:
    """The bucket a ``From`` counts failures in: the number (or client identity or SIP
    URI) itself, or :data:`ANONYMOUS_CALLER` for a withheld, malformed or overlong one.
    Never an error; idempotent, so the backend may apply it again to what it decrypts."""
    text = from_.strip()
    if len(text) > MAX_CALLER_ID or text.lower() in WITHHELD_CALLER_IDS:
        return ANONYMOUS_CALLER
    match = _CALLER_ID.fullmatch(text)
    if match is None:
        return ANONYMOUS_CALLER
    scheme = match[1]
    return text if scheme is None else f"{scheme.lower()}:{text[len(scheme) + 1 :]}"
