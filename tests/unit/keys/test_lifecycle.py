"""service.keys.lifecycle's decisions on their own: which versions may be retired, from
creation times and stored verifiers. The CLI on a real OpenBao:
tests/integration/keys/test_keys.py."""

from __future__ import annotations

import pytest

from service.keys.lifecycle import KeyStatus, plan_retirement, retirable_floor


def _key(
    created: dict[int, float | None], *, min_dec: int = 1, stored: dict[int, int] | None = None
) -> KeyStatus:
    return KeyStatus("k", max(created), min_dec, 0, 0, created, stored or {})


def test_retirable_floor_is_pure_arithmetic_on_creation_times() -> None:
    now = 100_000.0
    key = _key({1: now - 9000, 2: now - 5000, 3: now - 100})
    assert retirable_floor(key, 4000, now) == 2  # v2 has aged past 4000 s, v3 has not
    assert retirable_floor(key, 6000, now) == 1  # v2 younger than 6000 s: keep v1
    assert retirable_floor(key, 50, now) == 3  # never past the latest
    assert retirable_floor(_key({1: None, 2: None}), 10, now) == 2
    with pytest.raises(Exception, match="rewrap"):
        plan_retirement(_key({1: now - 9000, 2: now - 5000}, stored={1: 3}), 4000, 4000, now=now)
    plan = plan_retirement(_key({1: now - 9000, 2: now - 5000}, stored={2: 3}), 4000, 4000, now=now)
    assert (plan.current, plan.target, plan.changes) == (1, 2, True)
