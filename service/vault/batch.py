"""Per-item results of a Transit ``batch_input`` call, also when Vault refused the call.

Transit fails the whole call (HTTP 400) when any one item fails, yet its body still carries
every item's result, the good ones included. So a 400 with ``batch_results`` is an answer
item by item; a 400 without them is an error of the call itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.errors import VaultRequestError

BatchAnswer = Mapping[str, Any] | VaultRequestError  # a call's body, or its 400


def batch_results(answer: BatchAnswer, size: int, operation: str) -> list[dict[str, Any]]:
    """One result per item, in order. Raises the 400 again when it has no per-item
    results, and :class:`VaultRequestError` when the results do not match ``size``."""
    body = answer.response_json if isinstance(answer, VaultRequestError) else answer
    results = ((body or {}).get("data") or {}).get("batch_results")
    if results is None and isinstance(answer, VaultRequestError):
        raise answer
    if not isinstance(results, list) or len(results) != size:
        raise VaultRequestError(f"{operation}: unexpected batch result shape")
    return results
