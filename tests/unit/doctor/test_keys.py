"""Doctor's key rows on KeyStatus values (pure: a fixed clock, no Vault; the real Vault
cases are in tests/integration/deploy/test_doctor.py)."""

from __future__ import annotations

from typing import Any

from service.doctor.keys import ROTATION_GRACE_S, expected_periods, retirement_check, rotation_check
from service.keys.lifecycle import KeyStatus

NOW = 1_800_000_000.0
HOUR, DAY = 3600.0, 86400.0
PERIOD = 30 * DAY


def key(
    name: str = "ivr-dtmf",
    *,
    created: dict[int, float | None],
    minimum: int = 1,
    period: float = PERIOD,
    stored: dict[int, int] | None = None,
) -> KeyStatus:
    return KeyStatus(name, max(created), minimum, 0, int(period), created, stored or {})


def test_expected_periods_come_from_the_layout() -> None:
    layout: dict[str, dict[str, Any]] = {
        "ivr-dtmf": {"config": {"auto_rotate_period": "720h"}},
        "ivr-lookup": {"config": {"deletion_allowed": False}},
    }
    assert expected_periods(layout) == {"ivr-dtmf": PERIOD}


def test_a_key_rotated_within_its_period_passes() -> None:
    check = rotation_check(
        {"ivr-dtmf": key(created={1: NOW - 29 * DAY})}, {"ivr-dtmf": PERIOD}, NOW
    )
    assert check.ok and "ivr-dtmf v1 is 29d old, rotates every 30d" in check.detail


def test_a_key_past_its_period_fails_once_vault_had_time_to_rotate() -> None:
    late = NOW - PERIOD - ROTATION_GRACE_S - 60
    check = rotation_check(
        {"ivr-dtmf": key(created={1: NOW - 90 * DAY, 2: late})}, {"ivr-dtmf": PERIOD}, NOW
    )
    assert (
        not check.ok and "latest v2 is 30.1d old, past its auto_rotate_period 30d" in check.detail
    )
    just = rotation_check(
        {"ivr-dtmf": key(created={1: NOW - PERIOD - HOUR})}, {"ivr-dtmf": PERIOD}, NOW
    )
    assert just.ok  # within Vault's check interval


def test_rotation_off_or_key_missing_fails() -> None:
    off = rotation_check({"ivr-dtmf": key(created={1: NOW}, period=0)}, {"ivr-dtmf": PERIOD}, NOW)
    assert not off.ok and "auto-rotation is off (the layout says 30d)" in off.detail
    gone = rotation_check({}, {"ivr-dtmf": PERIOD}, NOW)
    assert not gone.ok and "ivr-dtmf: not found" in gone.detail and gone.fix


def test_retiring_a_version_whose_successor_is_older_than_call_max_age_passes() -> None:
    check = retirement_check(
        {"ivr-dtmf": key(created={1: NOW - 10 * DAY, 2: NOW - 5 * HOUR}, minimum=2)}, 4 * HOUR, NOW
    )
    assert check.ok


def test_retiring_too_soon_fails_with_the_version_to_go_back_to() -> None:
    check = retirement_check(
        {"ivr-dtmf": key(created={1: NOW - 10 * DAY, 2: NOW - HOUR, 3: NOW - 60}, minimum=3)},
        4 * HOUR,
        NOW,
    )
    assert not check.ok
    assert "ivr-dtmf: v2 is retired but v3 is only 1m old" in check.detail
    assert "min_decryption_version=1" in str(check.fix)  # v2 too is younger than 4 h


def test_stored_records_under_retired_versions_fail() -> None:
    check = retirement_check(
        {
            "ivr-dtmf": key(
                created={1: NOW - 10 * DAY, 2: NOW - 9 * DAY}, minimum=2, stored={1: 3, 2: 5}
            )
        },
        4 * HOUR,
        NOW,
    )
    assert not check.ok and "3 stored records use retired versions (v1)" in check.detail
    assert "min_decryption_version=1, then `ivr-vault keys rewrap`" in str(check.fix)


def test_hmac_keys_without_creation_times_pass_the_age_rule() -> None:
    check = retirement_check(
        {"ivr-lookup": key("ivr-lookup", created={1: None, 2: None}, minimum=2, period=0)},
        4 * HOUR,
        NOW,
    )
    assert check.ok
