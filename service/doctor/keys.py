"""The Transit keys as key-admin reads them: is each rotating as the layout says, and does
``min_decryption_version`` leave every call and every stored record readable?"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from service.doctor.report import Check
from service.keys.lifecycle import KeyStatus, retirable_floor
from service.settings import Settings, parse_duration

# Vault checks auto-rotation periodically (about hourly), so a key may be a little older
# than its period before the next check rotates it.
ROTATION_GRACE_S = 2 * 3600.0


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}".replace(".0", "")
    return f"{seconds:.0f}s"


def expected_periods(layout_keys: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``auto_rotate_period`` per key, as vault/layout.json configures it (seconds)."""
    periods = {}
    for name, spec in layout_keys.items():
        period = (spec.get("config") or {}).get("auto_rotate_period")
        if period:
            periods[name] = parse_duration(str(period), name=f"{name} auto_rotate_period")
    return periods


def rotation_check(
    keys: Mapping[str, KeyStatus], expected: Mapping[str, float], now: float
) -> Check:
    """Each key the layout rotates: rotation on, and its latest version younger than the
    period (plus Vault's check interval)."""
    problems, seen = [], []
    for name, period in expected.items():
        key = keys.get(name)
        if key is None:
            problems.append(f"{name}: not found")
            continue
        if key.auto_rotate_period == 0:
            problems.append(f"{name}: auto-rotation is off (the layout says {_span(period)})")
            continue
        created = key.created.get(key.latest_version)
        if created is None:
            seen.append(f"{name} v{key.latest_version} (age unknown)")
            continue
        age = now - created
        if age > key.auto_rotate_period + ROTATION_GRACE_S:
            problems.append(
                f"{name}: latest v{key.latest_version} is {_span(age)} old, past "
                f"its auto_rotate_period {_span(key.auto_rotate_period)}"
            )
        else:
            seen.append(
                f"{name} v{key.latest_version} is {_span(age)} old, rotates every "
                f"{_span(key.auto_rotate_period)}"
            )
    if problems:
        return Check.failed(
            "key rotation",
            "; ".join(problems),
            "`ivr-vault keys rotate --key NAME` now; `ivr-vault bootstrap` "
            "(admin token) sets auto_rotate_period back",
        )
    return Check.passed("key rotation", "; ".join(seen) or "no key to rotate")


def retirement_check(
    keys: Mapping[str, KeyStatus], call_max_age: float, now: float, *, mount: str = "transit"
) -> Check:
    """No version retired while a call could still hold one of its ciphertexts (the next
    version younger than CALL_MAX_AGE), and none that stored records still use: the rule
    of ``ivr-vault keys retire``, checked on what Vault holds now."""
    problems, fixes, seen = [], [], []
    for name, key in keys.items():
        floor = key.min_decryption_version
        allowed = retirable_floor(
            dataclasses.replace(key, min_decryption_version=1), call_max_age, now
        )
        if floor > allowed:
            created = key.created.get(floor)
            young = "" if created is None else f" is only {_span(now - created)} old"
            problems.append(
                f"{name}: v{floor - 1} is retired but v{floor}{young}, younger "
                f"than CALL_MAX_AGE ({_span(call_max_age)}): a call that began "
                f"before v{floor} cannot finish"
            )
            fixes.append(f"bao write {mount}/keys/{name}/config min_decryption_version={allowed}")
        stranded = {v: n for v, n in key.stored_records.items() if v < floor and n}
        if stranded:
            count = sum(stranded.values())
            problems.append(
                f"{name}: {count} stored records use retired versions "
                f"({', '.join(f'v{v}' for v in sorted(stranded))}) and cannot "
                "be read"
            )
            fixes.append(
                f"bao write {mount}/keys/{name}/config "
                f"min_decryption_version={min(stranded)}, then `ivr-vault keys "
                "rewrap` (HMAC verifiers instead move at each account's next "
                "lookup)"
            )
        seen.append(f"{name} min_decryption_version {floor}")
    if problems:
        return Check.failed(
            "key retirement", "; ".join(problems), "; ".join(fixes) + " (as ivr-keyadmin)"
        )
    return Check.passed(
        "key retirement", "; ".join(seen) + f"; CALL_MAX_AGE {_span(call_max_age)} respected"
    )


def key_checks(
    keys: Mapping[str, KeyStatus],
    settings: Settings,
    expected: Mapping[str, float],
    now: float | None = None,
) -> list[Check]:
    at = time.time() if now is None else now
    return [
        rotation_check(keys, expected, at),
        retirement_check(keys, settings.call_max_age, at, mount=settings.transit_mount),
    ]
