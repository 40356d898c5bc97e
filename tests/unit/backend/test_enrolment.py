"""Enrolment's checks that need neither Vault nor the store, and its batching of Transit
HMACs (a fake Transit; the real one, the store's refusals and the CLI's lines:
tests/integration/calls/test_identification.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from service.backend.enrolment import ITEMS_PER_CALL, Enrolment, make_records, problem
from service.cli.accounts import read_enrolment
from service.settings import Settings
from service.store.identity import matches
from tests.support.fake_transit import FakeTransit

GOOD = Enrolment("AC12345678", "12.55", "31415926", "5678", "7351", ("+15005550006",))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"account": "AC 1"}, "account: expected letters"),
        ({"balance": "12,55"}, "balance: expected an amount"),
        ({"balance": "-1"}, "balance: expected an amount"),
        ({"account_number": "3141592"}, "account number: expected exactly 8 digits"),
        ({"account_number": "3141592٦"}, "account number: expected exactly 8 digits"),
        ({"account_number": "12345678"}, "must not be the digits of the account's label"),
        ({"last4": "567"}, "card last-4: expected exactly 4 digits"),
        ({"pin": "73511"}, "PIN: expected exactly 4 digits"),
        ({"pin": "1111"}, "PIN refused: one digit repeated"),
        ({"callers": ("15005550006",)}, "caller number: expected E.164"),
        ({"callers": ("+1",) * 6}, "caller numbers: at most 5"),
    ],
)
def test_each_problem_is_one_phrase_without_the_digits(
    change: dict[str, object], says: str
) -> None:
    row = Enrolment(**{**GOOD.__dict__, **change})
    why = problem(row, Settings())
    assert why is not None and says in why
    secrets = [row.account_number, row.last4, row.pin, *(c[1:] for c in row.callers)]
    assert not any(len(value) >= 3 and value in why for value in secrets), why
    assert "7351" not in repr(row) and "31415926" not in repr(row)


def test_a_good_row_and_the_digits_setting() -> None:
    assert problem(GOOD, Settings()) is None
    assert problem(GOOD, Settings(account_number_digits=10)) == (
        "account number: expected exactly 10 digits"
    )
    assert (
        problem(
            Enrolment(*GOOD.__dict__.values()),
            Settings(),
            check_pin=False,
        )
        is None
    )


def test_records_are_batched_by_whole_rows_and_bound_to_their_own_salt() -> None:
    calls: list[int] = []

    class Counted(FakeTransit):
        async def hmac(
            self, inputs: Sequence[bytes], *, key_version: int | None = None
        ) -> list[str]:
            calls.append(len(inputs))
            return await super().hmac(inputs, key_version=key_version)

    transit = Counted()
    rows = [
        Enrolment(f"AC{n}", "1.00", f"{40000000 + n}", "5678", "7351", ("+15005550006",))
        for n in range(ITEMS_PER_CALL // 4 * 2 + 1)
    ]  # 4 inputs a row: number, card,
    records = asyncio.run(make_records(transit, rows))  # PIN and its caller number
    assert calls == [ITEMS_PER_CALL // 4 * 4, ITEMS_PER_CALL // 4 * 4, 4]
    assert len({r.card_verifier for r in records}) == len(rows)  # the same card, salted
    assert len({r.card_hmac for r in records}) == 1
    assert all(matches(r.card_verifier, r.salt, r.card_hmac, salted=True) for r in records)
    assert len({r.number_verifier for r in records}) == len(rows)


def test_the_cli_reads_the_entries_then_callers_until_an_empty_line() -> None:
    lines = iter(["31415926", "5678", "7351", "+15005550006", "+15005550007", "", "extra"])
    asked: list[tuple[str, bool]] = []

    def read(label: str, secret: bool) -> str:
        asked.append((label, secret))
        return next(lines)

    assert read_enrolment("AC1", "1.00", read) == (
        "31415926",
        "5678",
        "7351",
        ("+15005550006", "+15005550007"),
    )
    assert [secret for _, secret in asked] == [True, True, True, False, False, False]
