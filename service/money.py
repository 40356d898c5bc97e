"""Balances and their currency (``BALANCE_CURRENCY``): pure functions, no I/O.

A balance is stored as the text enrolment was given (``12.55``, ``1255``); this module says
whether that text is an amount of the configured currency, and splits it for reading aloud.
Enrolment (``service/backend/enrolment.py``) and the webhook's spoken result both use it, so
an amount the webhook could not read never reaches the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Final

# ISO 4217 minor units: the number of digits after the decimal point. JPY has none: a yen
# balance is ``1255``, never ``12.55``.
MINOR_UNITS: Final[Mapping[str, int]] = MappingProxyType({"USD": 2, "JPY": 0})

# No currency configured: the balance is read as enrolled, a plain number (today's demo
# answer "... your balance is 12.55"), with at most this many decimal places.
UNSPECIFIED_PLACES = 2


@dataclass(frozen=True)
class Amount:
    """A validated balance. ``major`` and ``minor`` are ASCII digits; ``minor`` has the
    currency's minor units (empty for JPY); with no currency, the places enrolled."""

    currency: str  # "" when BALANCE_CURRENCY is unset
    major: str
    minor: str

    @property
    def plain(self) -> str:
        """As enrolled: ``12.55``, ``1255``."""
        return f"{self.major}.{self.minor}" if self.minor else self.major

    @property
    def grouped(self) -> str:
        """Thousands grouped with commas, as en-US and ja-JP both write amounts:
        ``1,255``, ``1,234.50``."""
        major = f"{int(self.major):,}"
        return f"{major}.{self.minor}" if self.minor else major

    @property
    def fields(self) -> dict[str, str]:
        """What a catalog's amount sentence may name: ``{amount}`` (grouped), ``{major}``
        (grouped), ``{minor}`` (cents as a number: ``5`` for ``.05``)."""
        return {
            "amount": self.grouped,
            "major": f"{int(self.major):,}",
            "minor": str(int(self.minor or "0")),
        }

    @property
    def whole(self) -> bool:
        return int(self.minor or "0") == 0


def parse_balance(text: str, currency: str) -> Amount:
    """``text`` as an amount of ``currency`` (``""``: none configured). Raises
    :class:`ValueError` with a sentence for an operator; the sentence never repeats the
    text (a balance is account data)."""
    if currency and currency not in MINOR_UNITS:
        raise ValueError(f"{currency} is not a known currency ({', '.join(MINOR_UNITS)})")
    places = MINOR_UNITS[currency] if currency else UNSPECIFIED_PLACES
    major, dot, minor = text.partition(".")
    if not (major.isascii() and major.isdigit()) or (
        dot and not (minor.isascii() and minor.isdigit())
    ):
        raise ValueError(
            f"balance: expected a number such as {_example(places)}, digits and at most one point"
        )
    if len(minor) > places or (currency and dot and len(minor) != places):
        if places == 0:
            raise ValueError(
                f"balance: {currency} has no minor units; write a whole "
                f"number such as {_example(0)}"
            )
        raise ValueError(
            f"balance: {currency or 'an amount'} takes "
            f"{'exactly' if currency else 'at most'} {places} decimal places, "
            f"such as {_example(places)}"
        )
    try:
        Decimal(text)
    except InvalidOperation:  # pragma: no cover - excluded by the checks above
        raise ValueError("balance: not a number") from None
    if currency:
        minor = minor.ljust(places, "0")  # "12" dollars is "12.00"
    return Amount(currency, str(int(major)), minor)


def _example(places: int) -> str:
    return "1255" if places == 0 else "12." + "55"[:places].ljust(places, "0")
