"""A balance against its currency's minor units (BALANCE_CURRENCY), for enrolment."""

from __future__ import annotations

import pytest

from service.money import parse_balance


@pytest.mark.parametrize(
    ("text", "currency", "plain", "grouped"),
    [
        ("12.55", "", "12.55", "12.55"),
        ("1255", "", "1255", "1,255"),
        ("12.5", "", "12.5", "12.5"),
        ("12.55", "USD", "12.55", "12.55"),
        ("12", "USD", "12.00", "12.00"),
        ("0012.30", "USD", "12.30", "12.30"),
        ("1255", "JPY", "1255", "1,255"),
        ("1234567", "JPY", "1234567", "1,234,567"),
    ],
)
def test_an_amount_of_the_currency_is_accepted(
    text: str, currency: str, plain: str, grouped: str
) -> None:
    amount = parse_balance(text, currency)
    assert (amount.plain, amount.grouped) == (plain, grouped)


@pytest.mark.parametrize(
    ("text", "currency", "line"),
    [
        ("12.55", "JPY", "balance: JPY has no minor units; write a whole number such as 1255"),
        ("1255.", "JPY", "balance: expected a number such as 1255, digits and at most one point"),
        ("12.5", "USD", "balance: USD takes exactly 2 decimal places, such as 12.55"),
        ("12.555", "USD", "balance: USD takes exactly 2 decimal places, such as 12.55"),
        ("12.555", "", "balance: an amount takes at most 2 decimal places, such as 12.55"),
        ("-5", "USD", "balance: expected a number such as 12.55, digits and at most one point"),
        ("1e3", "", "balance: expected a number such as 12.55, digits and at most one point"),
        (
            "\uff11\uff12",
            "JPY",  # fullwidth digits: isdigit() is true, isascii() is not
            "balance: expected a number such as 1255, digits and at most one point",
        ),
        ("", "JPY", "balance: expected a number such as 1255, digits and at most one point"),
        ("1,255", "JPY", "balance: expected a number such as 1255, digits and at most one point"),
        ("12", "EUR", "EUR is not a known currency (USD, JPY)"),
    ],
)
def test_anything_else_is_refused_without_repeating_it(text: str, currency: str, line: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_balance(text, currency)
    assert str(refused.value) == line
