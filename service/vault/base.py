"""What both Vault clients do alike, without I/O: the blocking one
(:mod:`service.vault.client`, hvac over requests) and the event loop's
(:mod:`service.vault.async_client`, aiohttp) differ only in how they send a request, as
httpx's ``Client`` and ``AsyncClient`` share their ``BaseClient``.

- :func:`fails_over`: which outcome makes a call try the next node;
- :func:`error_for_status` and :func:`no_answer`: which status or failure becomes which of
  our errors (messages name the operation and the status, never a body: it may echo a
  plaintext);
- :func:`parse_body`: a 2xx body as Vault's JSON object, or an error;
- :class:`Target`: where both connect, and how;
- :class:`TokenKeeper`: the one token both use, renewed or replaced when due.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from service.errors import (
    VaultError,
    VaultNotFound,
    VaultPermissionDenied,
    VaultRequestError,
    VaultTimeout,
    VaultUnavailable,
)
from service.settings import Secret

log = structlog.get_logger("ivr.vault")

JSON = dict[str, Any]

# Renew when less than this share of the token's TTL is left, so a renewal that is slow or
# refused still leaves time to log in again before the token dies.
RENEW_AT_FRACTION = 1 / 3
# A token this close to its end is not handed out: log in first.
EXPIRY_MARGIN_S = 0.5

# Answers that say Vault (or the path in front of it) is failing, not that it refused.
_UNAVAILABLE = frozenset({500, 502, 503})


def fails_over(status: int | None) -> bool:
    """Try the next node after no answer (``None``: refused, reset, timed out) or an answer
    only this node gives (a 5xx: sealed, not initialised, a standby that lost its leader,
    a gateway that timed out). Never after a 4xx: that is the cluster's answer, which
    another node would repeat."""
    return status is None or status >= 500


def error_for_status(
    status: int, operation: str, body: bytes = b"", addr: str | None = None
) -> VaultError:
    """A non-2xx answer as our error; the message ends with the status and ``addr``, the
    node that gave it."""
    if status == 403:
        return VaultPermissionDenied(f"{operation}: permission denied", addr=addr, status=status)
    if status == 400:
        # Per-item batch results ride in a 400's body (one failed item fails the call).
        parsed = _json_object(body)
        return VaultRequestError(
            f"{operation}: Vault refused the request",
            response_json=parsed,
            addr=addr,
            status=status,
        )
    if status == 404:
        return VaultNotFound(f"{operation}: not found", addr=addr, status=status)
    if status == 429:
        return VaultUnavailable(f"{operation}: Vault rate limit exceeded", addr=addr, status=status)
    # 501 (not initialised) and 504 (a gateway's timeout) fail over, but if the last node
    # says so too, it is an error of its own, not "sealed".
    if status in _UNAVAILABLE:
        return VaultUnavailable(
            f"{operation}: Vault is sealed or failing", addr=addr, status=status
        )
    return VaultError(f"{operation}: Vault error", addr=addr, status=status)


def no_answer(operation: str, *, timed_out: bool, addr: str | None = None) -> VaultError:
    """No answer from the last node tried (``addr``)."""
    if timed_out:
        return VaultTimeout(f"{operation}: no answer from Vault in time", addr=addr)
    return VaultUnavailable(f"{operation}: cannot reach Vault", addr=addr)


def unexpected(operation: str, addr: str | None = None) -> VaultError:
    """Vault was reached, but what came back is not Vault's answer (a proxy's error page,
    a truncated body): it cannot be trusted, and is not "cannot reach Vault"."""
    return VaultError(f"{operation}: unexpected answer from Vault", addr=addr)


def parse_body(status: int, body: bytes, operation: str, addr: str | None = None) -> JSON:
    """The JSON object of a 2xx answer (``{}`` for none); an error for anything else
    (naming ``addr``, the node that answered)."""
    if status >= 300:
        raise error_for_status(status, operation, body, addr)
    if status == 204 or not body:
        return {}
    parsed = _json_object(body)
    if parsed is None:
        raise unexpected(operation, addr)
    return parsed


def _json_object(body: bytes) -> JSON | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


@dataclass(frozen=True)
class Target:
    """Where both clients connect, and how, read from the environment once: the nodes in
    order, the timeout of one request, TLS verification (a CA bundle's path, or a bool),
    and the proxy for each node (None: direct)."""

    addresses: tuple[str, ...]
    timeout: float
    verify: str | bool
    proxies: Mapping[str, str | None]


@dataclass(frozen=True)
class TokenState:
    """What we know of the token in use. Times are the keeper's clock
    (``time.monotonic()``). Replaced whole, never changed."""

    token: Secret
    issued_at: float
    ttl: float  # 0: does not expire (a root or periodic-less token)
    renewable: bool

    def remaining(self, now: float) -> float:
        return float("inf") if self.ttl == 0 else self.ttl - (now - self.issued_at)


class TokenKeeper:
    """The one token of one identity, shared by both clients, thread-safe.

    ``login`` gets a fresh token (AppRole) or looks a fixed one up; ``renew`` extends the
    token in use, or is None for a fixed token (operator CLI, bootstrap), which can be
    neither renewed nor replaced. Both do the I/O; the keeper decides when.
    """

    def __init__(
        self,
        login: Callable[[], TokenState],
        renew: Callable[[TokenState], TokenState] | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._login = login
        self._renew = renew
        self._clock = clock
        self._lock = threading.Lock()
        self._state: TokenState | None = None

    @property
    def replaceable(self) -> bool:
        """AppRole: a refused or expired token is replaced by a fresh login."""
        return self._renew is not None

    def valid(self) -> TokenState:
        """A token good for the next call: logs in or renews first when due (blocking;
        holds the lock for the round trip, so concurrent callers share one login)."""
        with self._lock:
            state = self._state
            now = self._clock()
            if state is None or state.remaining(now) <= EXPIRY_MARGIN_S:
                state = self._login()
            elif state.ttl and state.remaining(now) < state.ttl * RENEW_AT_FRACTION:
                state = self._refresh(state)
            self._state = state
            return state

    def _refresh(self, state: TokenState) -> TokenState:
        """Renew; if renewal is refused, or the max TTL cuts it short, log in again."""
        if self._renew is None:
            return state
        if state.renewable:
            try:
                renewed = self._renew(state)
            except VaultError as exc:
                log.warning("vault token renewal refused; logging in again", kind=exc.kind)
            else:
                # At the role's max TTL Vault "renews" for less than we asked: a fresh login
                # is the only way to get a full TTL back.
                if renewed.ttl >= state.ttl * RENEW_AT_FRACTION:
                    return renewed
        return self._login()

    def peek(self) -> tuple[TokenState | None, bool]:
        """For the event loop, without blocking: never takes the lock, which a login in
        another thread may hold for a whole round trip. Returns (a token state still valid,
        or None: log in first; whether renewal or re-login is due)."""
        state = self._state  # replaced whole, never mutated: one atomic read
        if state is None:
            return None, True
        remaining = state.remaining(self._clock())
        if remaining <= EXPIRY_MARGIN_S:
            return None, True
        due = bool(state.ttl) and remaining < state.ttl * RENEW_AT_FRACTION and self.replaceable
        return state, due

    def retry_after_denial(self, refused: TokenState | None, attempt: int) -> bool:
        """A 403: right after the token died on the server (revoked, clock skew) it earns
        one fresh login and one retry; a second 403, or one for a fixed token, is a real
        denial. True: drop ``refused`` (unless another caller already replaced it) and try
        once more."""
        if attempt > 1 or not self.replaceable:
            return False
        with self._lock:
            if refused is None or self._state is refused:
                self._state = None
        return True

    def forget(self) -> TokenState | None:
        """Drop the token (shutdown); returns it, for a revocation."""
        with self._lock:
            state, self._state = self._state, None
        return state
