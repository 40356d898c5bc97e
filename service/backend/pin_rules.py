"""Which PINs enrolment refuses: the ones a guesser tries first.

A 4-digit PIN has 10,000 values, and the lockout allows ``LOCKOUT_HARD_LIMIT`` (10) guesses
per card; a caller-number limit slows sprays across cards. Both bound guessing only if the
PINs are spread out. Frequency data shows they are not: in DataGenetics' analysis of
3.4 million leaked PINs, 1234 alone was about 11 %, and the 20 most common covered about
27 %. So enrolment refuses:

- a digit repeated four times (``0000`` … ``9999``);
- a straight sequence, up or down, also wrapping past 9 to 0 (``0123``, ``7890``, ``8901``,
  ``3210``, ``0987``, ``2109``): keypad runs across the wrap are as easy to try as any
  other, and ``0987`` is itself among the 100 most common;
- the 100 most common PINs in published frequency data (:data:`COMMON_PINS`).

Together that is 113 refused values of 10,000 (the 100, plus 13 repeats and sequences
not among them). The rule names why a PIN was refused; the PIN itself is never quoted.
"""

from __future__ import annotations

import itertools
from typing import Final

from service.formats import PIN_DIGITS, is_digits

# The 100 most frequent PINs, most frequent first: the top 100 rows of SecLists'
# Passwords/Common-Credentials/four-digit-pin-codes-sorted-by-frequency-withcount.csv
# (danielmiessler/SecLists, commit 5c9217fe8e930c41d128aacdc68cbce7ece96e4f, MIT licence),
# a frequency ordering of all 10,000 PINs derived from DataGenetics' "PIN analysis"
# (Nick Berry, 2012, 3.4 million PINs from leaked password tables); its first 20 agree with
# the article's published top-20 table.
_TOP_100 = """
1234 1111 0000 1212 7777 1004 2000 4444 2222 6969 9999 3333 5555 6666 1122 1313 8888 2001 4321 1010
0909 2580 0007 1818 1230 1984 1986 0070 1985 0987 1000 1231 1987 1999 2468 2002 2323 0123 1123 1233
1357 1221 1324 1988 2112 2121 5150 1024 1112 1224 1969 1225 1235 1982 1983 1001 1978 1979 7410 1020
1223 1974 1975 1977 1980 1981 1029 1121 1213 1973 1976 2020 2345 2424 2525 1515 1970 1972 1989 0001
1023 1414 9876 0101 0907 1245 1966 1967 1971 8520 1964 1968 4545 1318 5678 1011 1124 1211 1963 4200
"""
COMMON_PINS: Final = frozenset(_TOP_100.split())


def _is_repeated(pin: str) -> bool:
    return len(set(pin)) == 1


def _is_sequence(pin: str) -> bool:
    """Each digit one more than the last (mod 10), or each one less."""
    steps = {(int(b) - int(a)) % 10 for a, b in itertools.pairwise(pin)}
    return steps in ({1}, {9})


def weakness(pin: str) -> str | None:
    """Why enrolment refuses ``pin`` (a short phrase that never quotes it), or None when it
    is acceptable. ``pin`` must be 4 ASCII digits."""
    if not is_digits(pin, PIN_DIGITS):
        raise ValueError("a PIN is exactly 4 digits")
    if _is_repeated(pin):
        return "one digit repeated"
    if _is_sequence(pin):
        return "a straight sequence of digits"
    if pin in COMMON_PINS:
        return "one of the 100 most common PINs"
    return None
