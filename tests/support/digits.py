"""What "a digit" means to the tests, independent of the implementation: every alphabet a
hostile client could type, a checker that walks logged JSON, and hypothesis strategies that
hide digits in text and nested values."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping

from hypothesis import strategies as st

DIGIT_ALPHABETS: dict[str, str] = {
    "ascii": "0123456789",
    "arabic_indic": "".join(map(chr, range(0x0660, 0x066A))),
    "extended_arabic_indic": "".join(map(chr, range(0x06F0, 0x06FA))),
    "fullwidth": "".join(map(chr, range(0xFF10, 0xFF1A))),
    "devanagari": "".join(map(chr, range(0x0966, 0x0970))),
    "superscript": "⁰¹²³⁴⁵⁶⁷⁸⁹",
    "circled": "".join(map(chr, range(0x2460, 0x2474))) + "⓪",
    "double_circled": "".join(map(chr, range(0x24F5, 0x24FF))),
    "dingbat_negative_circled": "".join(map(chr, range(0x2776, 0x2780))),
    "math_bold": "".join(map(chr, range(0x1D7CE, 0x1D7D8))),
    "ethiopic": "".join(map(chr, range(0x1369, 0x1372))),
}
ALL_DIGITS = "".join(DIGIT_ALPHABETS.values())
SEPARATORS = [" ", "-", ".", "\u00a0", "\u200b", "*", "#", "", ",", "/"]


def reads_as_digit(ch: str) -> bool:
    return ch.isdigit() or any(c.isdigit() for c in unicodedata.normalize("NFKC", ch))


def has_digit(text: str) -> bool:
    return any(reads_as_digit(c) for c in text) or any(
        c.isdigit() for c in unicodedata.normalize("NFKC", text)
    )


def assert_no_digits(value: object, allowed: Mapping[str, Callable[[object], bool]]) -> None:
    """Walk JSON-like output; only a validated value under an allow-listed key may hold digits."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert not has_digit(key), key
            if key in allowed and allowed[key](item):
                continue
            assert_no_digits(item, allowed)
    elif isinstance(value, list):
        for item in value:
            assert_no_digits(item, allowed)
    elif isinstance(value, str):
        assert not has_digit(value), value
    else:
        assert value is None or isinstance(value, bool), repr(value)


digit_chars = st.sampled_from(ALL_DIGITS)
digit_runs = st.lists(
    st.tuples(digit_chars, st.sampled_from(SEPARATORS)), min_size=1, max_size=12
).map(lambda pairs: "".join(d + s for d, s in pairs))
digit_text = st.one_of(
    digit_runs,
    st.tuples(st.text(max_size=10), digit_runs, st.text(max_size=10)).map("".join),
)
scalars = st.one_of(
    digit_text,
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False),
    st.fractions(),
    st.complex_numbers(allow_nan=False),
    digit_text.map(lambda s: s.encode("utf-8")),
    st.binary(max_size=20),
    st.booleans(),
    st.none(),
)
nested = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(digit_text, inner, max_size=4),
        st.frozensets(st.one_of(digit_text, st.integers()), max_size=4),
    ),
    max_leaves=12,
)

# A well-formed Twilio CallSid: its digits are allowed under `call_sid`, nowhere else.
GOOD_SID = "CA" + "0123456789abcdef" * 2
