"""The PIN step's issue time: written by the webhook into the ``<Gather>`` action URL
(covered by Twilio's signature of the request that comes back), checked by the webhook
against ``STEP_MAX_AGE`` and by the backend against its own ``CALL_MAX_AGE`` (how long it
remembers a call's answers), so that a step older than the backend's memory is never
decided afresh, whatever the webhook was told (docs/security.md, "step age at the backend")."""

from __future__ import annotations

# Clocks of two replicas (webhook, backend) may disagree a little: an issue time up to this
# far in the future is still fresh.
STEP_CLOCK_SKEW_S = 30.0
ISSUED_PATTERN = r"^[0-9]{1,12}$"


def issued_is_fresh(issued: str | None, now: float, max_age: float) -> bool:
    """``issued``: Unix seconds as ASCII digits (at most 12). Fresh when no older than
    ``max_age`` and no further than :data:`STEP_CLOCK_SKEW_S` in the future."""
    if issued is None or not (issued.isascii() and issued.isdigit()) or len(issued) > 12:
        return False
    age = now - int(issued)
    return -STEP_CLOCK_SKEW_S <= age <= max_age
