"""The leak search of tests/integration/test_log_leaks.py, on its own: a caller's digits are
found in base64 at any alignment."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.leak_search import base64_needles


@given(prefix=st.binary(max_size=7), suffix=st.binary(max_size=7),
       digits=st.text("0123456789", min_size=4, max_size=4))
@settings(max_examples=200, deadline=None)
def test_base64_needles_catch_any_alignment(prefix: bytes, suffix: bytes, digits: str) -> None:
    whole = base64.b64encode(prefix + digits.encode() + suffix).decode()
    assert any(needle in whole for needle in base64_needles(digits.encode()))
