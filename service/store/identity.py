"""What the store keeps instead of digits: the inputs HMACed by Transit (``ivr-lookup``),
and the local binding of the knowledge verifiers to their account.

Identifiers are searched through an index, so their verifiers are Transit's HMAC as it
is: ``acctno:<digits>`` (unique), ``callerid:<number>`` (a registration), and the caller
limit's ``caller:<bucket>``. The knowledge factors are HMACed by Transit without anything
of the account (``card:<last4>``, ``pin:<last4>:<pin>``), so one Transit batch serves every
candidate account, and then bound to the account here:
``vault:vN:`` + base64(HMAC-SHA256(key=the account's random salt, msg=Transit's HMAC)).
Two accounts with the same PIN or last-4 never store the same verifier, and the store
alone (salts included) is no help without Transit's key. The ``vault:vN:`` prefix is
Transit's version, kept so that rotation and re-making at the next lookup work as before.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import string

from service.formats import transit_version

SALT_BYTES = 16
# Letters only, so that an audit line naming an account is never masked as digits:
# 26^12 ≈ 2^56 references.
REFERENCE_LETTERS = string.ascii_uppercase
REFERENCE_LENGTH = 12


def card_input(last4: str) -> bytes:
    return f"card:{last4}".encode()


def pin_input(last4: str, pin: str) -> bytes:
    return f"pin:{last4}:{pin}".encode()


def caller_input(caller: str) -> bytes:
    """What is HMACed for a caller number's failure count (``caller_bucket``'s output)."""
    return f"caller:{caller}".encode()


def number_input(account_number: str) -> bytes:
    """An account number typed by a caller or enrolled by an operator."""
    return f"acctno:{account_number}".encode()


def registered_input(caller: str) -> bytes:
    """A caller number registered on an account (E.164, as ``caller_bucket`` returns it)."""
    return f"callerid:{caller}".encode()


# Salts and references are drawn many at a time, one read of the kernel's random bytes
# for all (secrets: a system call per draw). Drawn one by one, with a draw per letter,
# they were 17% of an import's busy samples under py-spy (bench/import_ab.py).
_REFERENCES = len(REFERENCE_LETTERS) ** REFERENCE_LENGTH  # 26^12 < 2^57
_DRAW_BYTES = 8
# Draws of 64 bits at or above the largest multiple of 26^12 are drawn again, so that
# every reference is equally likely (1 draw in 637).
_DRAW_LIMIT = (1 << 64) - (1 << 64) % _REFERENCES


def new_salts(count: int) -> list[str]:
    raw = secrets.token_bytes(SALT_BYTES * count).hex()
    return [raw[i : i + 2 * SALT_BYTES] for i in range(0, len(raw), 2 * SALT_BYTES)]


def new_salt() -> str:
    return new_salts(1)[0]


def new_references(count: int) -> list[str]:
    references: list[str] = []
    while len(references) < count:
        raw = secrets.token_bytes(_DRAW_BYTES * (count - len(references)))
        for i in range(0, len(raw), _DRAW_BYTES):
            n = int.from_bytes(raw[i : i + _DRAW_BYTES], "big")
            if n < _DRAW_LIMIT:
                references.append(_letters(n % _REFERENCES))
    return references


def new_reference() -> str:
    return new_references(1)[0]


def _letters(n: int) -> str:
    letters = []
    for _ in range(REFERENCE_LENGTH):
        n, digit = divmod(n, len(REFERENCE_LETTERS))
        letters.append(REFERENCE_LETTERS[digit])
    return "".join(letters)


def bind(salt: str, transit_hmac: str) -> str:
    """A knowledge verifier bound to one account: keyed by its salt, with Transit's
    version prefix kept."""
    version = transit_version(transit_hmac)
    if version is None:
        raise ValueError("not a Transit HMAC")
    mac = hmac.digest(bytes.fromhex(salt), transit_hmac.encode(), "sha256")  # one-shot, in C
    return f"vault:v{version}:{base64.b64encode(mac).decode()}"


def matches(stored: str, salt: str, transit_hmac: str, *, salted: bool) -> bool:
    """Whether ``transit_hmac`` is the entry behind ``stored`` (constant time). ``salted``
    False: a verifier migrated from before schema 3, Transit's HMAC as it was."""
    candidate = bind(salt, transit_hmac) if salted else transit_hmac
    return hmac.compare_digest(candidate.encode(), stored.encode())
