"""The leak search of tests/integration/calls/test_log_leaks.py, on its own: a caller's digits are
found in base64 at any alignment."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.leak_search import base64_needles
from tests.support.templates import shown_arguments


@given(
    prefix=st.binary(max_size=7),
    suffix=st.binary(max_size=7),
    digits=st.text("0123456789", min_size=4, max_size=4),
)
@settings(max_examples=200, deadline=None)
def test_base64_needles_catch_any_alignment(prefix: bytes, suffix: bytes, digits: str) -> None:
    whole = base64.b64encode(prefix + digits.encode() + suffix).decode()
    assert any(needle in whole for needle in base64_needles(digits.encode()))


def test_template_lines_are_recognised_and_their_arguments_checked() -> None:
    """tests/support/templates.py: the checker the leak tests rely on accepts a known
    template's checked arguments and nothing else."""
    running = "Uvicorn running on http://{} (Press CTRL+C to quit)"
    assert shown_arguments("uvicorn.error", "Started server process [4321]") == ["4321"]
    assert shown_arguments("uvicorn.error", running.format("127.0.0.1:8080"), ["127.0.0.1"]) == [
        "127.0.0.1",
        "8080",
    ]
    assert shown_arguments("uvicorn.error", running.format("***.*.*.*:8080")) == ["8080"]
    assert shown_arguments("hvac", "Started server process [4321]") is None
    assert shown_arguments("uvicorn.error", "Started server process [4321] again") is None
    for bad in (
        "Started server process [0]",
        "Started server process [99999999]",
        running.format("10.0.0.1:80"),
        running.format("127.0.0.1:70000"),
    ):
        with pytest.raises(AssertionError):
            shown_arguments("uvicorn.error", bad, ["127.0.0.1"])
    with pytest.raises(AssertionError):
        shown_arguments("uvicorn.error", "Uvicorn running on h4://x:1 (Press CTRL+C to quit)")
