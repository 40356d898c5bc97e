"""The verified form's pure parts (service/webhook/twilio_request.py): the PIN step's age,
the caller's bucket, and what a repeated parameter means."""

from __future__ import annotations

import pytest

from service.formats import ANONYMOUS_CALLER
from service.step_time import STEP_CLOCK_SKEW_S, issued_is_fresh
from service.webhook.twilio_request import TwilioForm

NOW = 1_700_000_000.0
MAX_AGE = 300.0


@pytest.mark.parametrize(
    ("issued", "fresh"),
    [
        (str(int(NOW)), True),
        (str(int(NOW - MAX_AGE)), True),  # exactly the limit
        (str(int(NOW - MAX_AGE - 1)), False),
        (str(int(NOW - 86_400)), False),
        (str(int(NOW + STEP_CLOCK_SKEW_S)), True),  # another replica's clock, a little ahead
        (str(int(NOW + STEP_CLOCK_SKEW_S + 1)), False),
        ("0", False),
    ],
)
def test_the_step_is_fresh_within_its_age(issued: str, fresh: bool) -> None:
    assert issued_is_fresh(issued, NOW, MAX_AGE) is fresh


ARABIC_INDIC = "".join(chr(0x0660 + int(d)) for d in "1700000000")  # str.isdigit() says yes


@pytest.mark.parametrize(
    "garbled",
    [
        None,
        "",
        "abc",
        "-5",
        "17e8",
        "1700000000.5",
        " 1700000000",
        ARABIC_INDIC,
        "9" * 13,
        "+1700000000",
    ],
)
def test_a_missing_or_garbled_issue_time_is_not_fresh(garbled: str | None) -> None:
    assert issued_is_fresh(garbled, NOW, MAX_AGE) is False


def form(
    params: dict[str, str],
    query: dict[str, str] | None = None,
    duplicated: frozenset[str] = frozenset(),
) -> TwilioForm:
    return TwilioForm(params, query or {}, duplicated, request_key="k")


def test_a_repeated_issue_time_is_not_fresh() -> None:
    issued = {"issued": str(int(NOW))}
    assert form({}, issued).step_is_fresh(NOW, MAX_AGE)
    assert not form({}, issued, frozenset({"?issued"})).step_is_fresh(NOW, MAX_AGE)


def test_the_caller_is_from_validated() -> None:
    assert form({"From": "+15005550006"}).caller == "+15005550006"
    assert form({"From": "Anonymous"}).caller == ANONYMOUS_CALLER
    assert form({}).caller == ANONYMOUS_CALLER
    # A repeated From is ambiguous: it counts with the withheld numbers.
    assert form({"From": "+15005550006"}, duplicated=frozenset({"From"})).caller == ANONYMOUS_CALLER


def test_repeated_digits_or_call_sid_are_ambiguous() -> None:
    sid = "CA" + "0" * 32
    assert form({"CallSid": sid, "Digits": "1234"}).digits(4) == "1234"
    assert form({"CallSid": sid, "Digits": "1234"}).digits(8) is None
    assert (
        form({"CallSid": sid, "Digits": "1234"}, duplicated=frozenset({"Digits"})).digits(4) is None
    )
    assert form({"CallSid": sid}, duplicated=frozenset({"CallSid"})).call_sid is None


def test_star_alone_and_the_attestation() -> None:
    star = {"Digits": "", "FinishedOnKey": "*"}
    assert form(star).pressed_only("*")
    assert not form({**star, "Digits": "1"}).pressed_only("*")
    assert not form({"Digits": ""}).pressed_only("*")  # a timeout, not a key
    assert not form(star, duplicated=frozenset({"FinishedOnKey"})).pressed_only("*")
    assert form({"StirVerstat": "TN-Validation-Passed-A"}).stir_verstat == "TN-Validation-Passed-A"
    assert form({"StirVerstat": "x y"}).stir_verstat is None
    assert form({}).stir_verstat is None
