"""Which PINs enrolment refuses (service/backend/pin_rules.py)."""

from __future__ import annotations

import pytest

from service.backend.pin_rules import COMMON_PINS, weakness

ALL = [f"{n:04d}" for n in range(10_000)]


@pytest.mark.parametrize("pin", [f"{d}" * 4 for d in range(10)])
def test_a_repeated_digit_is_refused(pin: str) -> None:
    assert weakness(pin) == "one digit repeated"


@pytest.mark.parametrize(
    "pin", ["0123", "3456", "6789", "7890", "8901", "9012", "3210", "9876", "0987", "1098", "2109"]
)
def test_straight_sequences_up_or_down_also_across_the_wrap_are_refused(pin: str) -> None:
    assert weakness(pin) is not None


def test_exactly_twenty_sequences_and_ten_repeats() -> None:
    """Up: 0123 … 6789 and 7890, 8901, 9012; down the same reversed. A PIN that is also
    common is reported by its shape."""
    assert len([p for p in ALL if weakness(p) == "a straight sequence of digits"]) == 20
    assert len([p for p in ALL if weakness(p) == "one digit repeated"]) == 10


def test_the_100_most_common_are_refused_and_the_list_is_the_sources() -> None:
    assert len(COMMON_PINS) == 100
    assert all(len(p) == 4 and p.isdigit() for p in COMMON_PINS)
    # The top of DataGenetics' published table, in its order: 1234 1111 0000 1212 7777.
    assert {"1234", "1111", "0000", "1212", "7777", "1004", "2000", "6969", "2580"} <= COMMON_PINS
    assert all(weakness(p) is not None for p in COMMON_PINS)
    assert weakness("1004") == "one of the 100 most common PINs"


def test_113_of_10000_are_refused_and_ordinary_pins_pass() -> None:
    refused = [p for p in ALL if weakness(p) is not None]
    assert len(refused) == 113
    for pin in ("4829", "7315", "0358", "5813", "2719", "8764"):
        assert weakness(pin) is None, pin


def test_the_reason_never_quotes_the_pin() -> None:
    for pin in ("1234", "9999", "0987", "2580"):
        reason = weakness(pin)
        assert reason is not None and not any(c.isdigit() for c in reason.replace("100", ""))


@pytest.mark.parametrize("bad", ["123", "12345", "12a4", "١٢٣٤", ""])
def test_only_four_digit_pins_are_judged(bad: str) -> None:
    with pytest.raises(ValueError, match="4 digits"):
        weakness(bad)
