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


def is_four_digits(entry: str) -> bool:
    """Exactly four ASCII digits. Other scripts' digits are refused, not normalised: a
    caller's keypad only sends 0-9 (``str.isdigit`` alone accepts ``١٢٣٤``)."""
    return len(entry) == 4 and entry.isascii() and entry.isdigit()
