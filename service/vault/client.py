"""A blocking Vault client: hvac wrapped, with AppRole login, token renewal and one error tree.

hvac is synchronous; this module never touches the event loop. It serves login, renewal,
admin and the CLI; Transit's hot path goes through :mod:`service.vault.async_client`, which
borrows this client's token (and its address, timeout, TLS and proxy settings) and calls
it in a thread pool only to log in or renew. Every call has a timeout, every foreign
exception (hvac, requests) is translated here into :mod:`service.errors`, and the token is
renewed before it expires and replaced by a fresh login when renewal is refused.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests
import requests.adapters
import requests.utils
import structlog

from service.errors import (
    VaultAuthError,
    VaultError,
    VaultNotFound,
    VaultPermissionDenied,
    VaultRequestError,
    VaultTimeout,
    VaultUnavailable,
)
from service.settings import Secret, Settings
from service.web.failover import Endpoints

log = structlog.get_logger("ivr.vault")

JSON = dict[str, Any]
T = TypeVar("T")

# What makes a call try the next node: no answer, or an answer only this node gives (sealed,
# not initialised yet, a standby that lost its leader: 5xx). Never a 4xx: that is the
# cluster's answer, which another node would repeat.
_FAIL_OVER = (hvac.exceptions.VaultDown, hvac.exceptions.InternalServerError,
              hvac.exceptions.BadGateway, hvac.exceptions.VaultNotInitialized,
              requests.exceptions.ConnectionError, requests.exceptions.Timeout)

# Renew when less than this share of the token's TTL is left, so a renewal that is slow or
# refused still leaves time to log in again before the token dies.
_RENEW_AT_FRACTION = 1 / 3


@dataclass(frozen=True)
class AppRoleCredentials:
    role_id: Secret
    secret_id: Secret


def choose_credentials(settings: Settings, *, approle_dir: Path | None = None,
                       ) -> AppRoleCredentials | Secret | None:
    """Who to be: VAULT_ROLE_ID/VAULT_SECRET_ID (or ``*_FILE``); else the ``role_id`` and
    ``secret_id`` files in ``approle_dir`` when given and present; else VAULT_TOKEN; None
    when there is nothing. The AppRole comes first, so that a broader token left in the
    environment is not used when the narrower identity is at hand."""
    if settings.vault_role_id and settings.vault_secret_id:
        return AppRoleCredentials(settings.vault_role_id, settings.vault_secret_id)
    if approle_dir is not None and all((approle_dir / name).is_file()
                                       for name in ("role_id", "secret_id")):
        return AppRoleCredentials(
            Secret((approle_dir / "role_id").read_text(encoding="utf-8").strip()),
            Secret((approle_dir / "secret_id").read_text(encoding="utf-8").strip()))
    return settings.vault_token


@dataclass
class TokenState:
    """What we know of the token in use. Times are ``time.monotonic()``."""

    token: Secret
    issued_at: float
    ttl: float  # 0: does not expire (a root or periodic-less token)
    renewable: bool

    def remaining(self, now: float) -> float:
        return float("inf") if self.ttl == 0 else self.ttl - (now - self.issued_at)


# The status each of these hvac exceptions stands for (hvac.utils.raise_for_error).
_HVAC_STATUS: dict[type[Exception], int] = {
    hvac.exceptions.InternalServerError: 500, hvac.exceptions.BadGateway: 502,
    hvac.exceptions.VaultDown: 503}


@contextmanager
def translate_errors(operation: str, addr: str | None = None) -> Iterator[None]:
    """Turn hvac and requests exceptions into ours. The message names the operation, the
    node asked (``addr``) and the HTTP status; it never includes a request or response
    body (they may hold plaintext)."""
    try:
        yield
    except hvac.exceptions.Forbidden:
        raise VaultPermissionDenied(f"{operation}: permission denied", addr=addr,
                                    status=403) from None
    except (hvac.exceptions.VaultDown, hvac.exceptions.InternalServerError,
            hvac.exceptions.BadGateway) as exc:
        raise VaultUnavailable(f"{operation}: Vault is sealed or failing", addr=addr,
                               status=_HVAC_STATUS[type(exc)]) from None
    except hvac.exceptions.InvalidRequest as exc:
        raise VaultRequestError(f"{operation}: Vault refused the request",
                                response_json=getattr(exc, "json", None), addr=addr,
                                status=400) from None
    except hvac.exceptions.InvalidPath:
        raise VaultNotFound(f"{operation}: not found", addr=addr, status=404) from None
    except hvac.exceptions.RateLimitExceeded:
        raise VaultUnavailable(f"{operation}: Vault rate limit exceeded", addr=addr,
                               status=429) from None
    except hvac.exceptions.VaultError as exc:
        raise VaultError(f"{operation}: Vault error ({type(exc).__name__})",
                         addr=addr) from None
    except requests.exceptions.JSONDecodeError:
        # Before RequestException, of which it is a subclass: Vault was reached.
        raise VaultError(f"{operation}: unexpected answer from Vault", addr=addr) from None
    except requests.exceptions.Timeout:
        raise VaultTimeout(f"{operation}: no answer from Vault in time", addr=addr) from None
    except requests.exceptions.RequestException:
        raise VaultUnavailable(f"{operation}: cannot reach Vault", addr=addr) from None
    except (KeyError, TypeError, ValueError):
        # A 200 that is not Vault's JSON (a proxy's error page, a truncated body): the
        # answer cannot be trusted, and must not escape as a foreign exception.
        raise VaultError(f"{operation}: unexpected answer from Vault", addr=addr) from None


class VaultClient:
    """Blocking, thread-safe Vault access for one identity.

    ``credentials`` is an AppRole (services) or a fixed token (operator CLI, bootstrap).
    ``clock`` is injectable so that renewal logic can be tested without sleeping.
    """

    def __init__(
        self,
        addr: str | Sequence[str],
        credentials: AppRoleCredentials | Secret,
        *,
        timeout: float,
        verify: str | bool = True,
        pool_size: int = 32,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        addrs = [a.rstrip("/") for a in ((addr,) if isinstance(addr, str) else addr)]
        # The nodes of a cluster: a call goes to the one that last worked and fails over
        # to the next on a refused connection, a timeout, a 5xx or a sealed node
        # (service/web/failover.py). The token is the cluster's, valid on every node.
        self.endpoints = Endpoints(addrs, name="vault", spread=False)
        session = requests.Session()
        # requests re-reads the proxy variables and ~/.netrc on every call (trust_env): a
        # few % of the services' CPU under load. Read the environment once, here, as
        # requests would (proxy for each address, NO_PROXY, CA bundle when verify is True).
        self._proxies = {a: requests.utils.get_environ_proxies(a) for a in addrs}
        self._proxy = {a: requests.utils.select_proxy(a, self._proxies[a]) for a in addrs}
        if verify is True:
            verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get(
                "CURL_CA_BUNDLE") or True
        session.trust_env = False
        # hvac takes verification from a session it is given (its verify= is ignored when
        # the session's is truthy, as a new session's is): set it here, or VAULT_CACERT is
        # never used and a private CA's certificate is refused.
        session.verify = verify
        # What the event loop's Transit client needs to behave like this one.
        self.timeout = timeout
        self.verify: str | bool = verify
        # A pool as large as the thread pool that uses it, so concurrent batches keep
        # their keep-alive connections instead of opening new ones (per node).
        adapter = requests.adapters.HTTPAdapter(pool_connections=max(2, len(addrs)),
                                                pool_maxsize=pool_size)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        # One hvac client per node over the one session: a thread never changes another
        # thread's target address.
        self._nodes = {a: hvac.Client(url=a, timeout=timeout, verify=verify, session=session,
                                      proxies=self._proxies[a]) for a in addrs}
        self._credentials = credentials
        self._clock = clock
        self._lock = threading.Lock()
        self._state: TokenState | None = None
        self.logins = 0
        self.renewals = 0

    @property
    def addr(self) -> str:
        """The node calls go to now."""
        return self.endpoints.current

    @property
    def _hvac(self) -> hvac.Client:
        return self._nodes[self.endpoints.current]

    def proxy_for(self, addr: str) -> str | None:
        """The proxy the environment names for ``addr`` (None when NO_PROXY covers it)."""
        return self._proxy[addr]

    def _set_token(self, token: str | None) -> None:
        for node in self._nodes.values():
            node.token = token

    def _on_any_node(self, operation: str, call: Callable[[hvac.Client], T]) -> T:
        """``call`` on the node that last worked; on a refused connection, a timeout, a
        5xx, a sealed or uninitialised node, on the next (each node once). Any other answer
        (403, 400, 404, 429) is the cluster's and is raised at once, translated."""
        order = self.endpoints.order()
        for tried, addr in enumerate(order, start=1):
            with translate_errors(operation, addr):
                try:
                    result = call(self._nodes[addr])
                except _FAIL_OVER:
                    self.endpoints.failed(addr)
                    if tried < len(order):
                        continue
                    raise
            self.endpoints.worked(addr)
            return result
        raise AssertionError("unreachable")

    @classmethod
    def from_settings(cls, settings: Settings, *, pool_size: int = 32,
                      credentials: AppRoleCredentials | Secret | None = None,
                      timeout: float | None = None) -> VaultClient:
        """A client for VAULT_ADDR (trusting VAULT_CACERT) as ``credentials``, by default
        those :func:`choose_credentials` finds in the settings."""
        creds = credentials or choose_credentials(settings)
        if creds is None:
            raise VaultAuthError("no Vault credentials: set VAULT_ROLE_ID and VAULT_SECRET_ID")
        verify: str | bool = settings.vault_cacert or True
        return cls(settings.vault_addr, creds, verify=verify, pool_size=pool_size,
                   timeout=settings.vault_timeout if timeout is None else timeout)

    # -- authentication ---------------------------------------------------------------

    def _login(self) -> TokenState:
        now = self._clock()
        if isinstance(self._credentials, Secret):
            self._set_token(self._credentials.reveal())
            data = self._on_any_node(
                "token lookup", lambda node: node.auth.token.lookup_self()["data"])
            with translate_errors("token lookup", self.addr):
                state = TokenState(self._credentials, now, float(data.get("ttl") or 0),
                                   bool(data.get("renewable")))
        else:
            credentials = self._credentials
            try:
                auth = self._on_any_node("approle login", lambda node: node.auth.approle.login(
                    role_id=credentials.role_id.reveal(),
                    secret_id=credentials.secret_id.reveal(), use_token=False)["auth"])
                with translate_errors("approle login", self.addr):
                    state = TokenState(Secret(auth["client_token"]), now,
                                       float(auth["lease_duration"]), bool(auth["renewable"]))
            except (VaultPermissionDenied, VaultRequestError) as exc:
                raise VaultAuthError("approle login: role-id or secret-id refused",
                                     addr=self.addr, status=exc.status) from None
            self._set_token(state.token.reveal())
        self.logins += 1
        log.info("vault login", ttl_s=state.ttl, renewable=state.renewable)
        return state

    def _renew(self, state: TokenState) -> TokenState:
        now = self._clock()
        auth = self._on_any_node("token renew", lambda node: node.auth.token.renew_self()["auth"])
        with translate_errors("token renew", self.addr):
            renewed = TokenState(state.token, now, float(auth["lease_duration"]),
                                 bool(auth["renewable"]))
        self.renewals += 1
        return renewed

    def _token_state(self) -> TokenState:
        with self._lock:
            state = self._state
            now = self._clock()
            if state is None or state.remaining(now) <= 0.5:
                state = self._login()
            elif state.ttl and state.remaining(now) < state.ttl * _RENEW_AT_FRACTION:
                state = self._refresh(state)
            self._state = state
            return state

    def _refresh(self, state: TokenState) -> TokenState:
        """Renew; if renewal is refused, or the max TTL cuts it short, log in again."""
        if state.renewable and not isinstance(self._credentials, Secret):
            try:
                renewed = self._renew(state)
            except VaultError as exc:
                log.warning("vault token renewal refused; logging in again", kind=exc.kind)
            else:
                # At the role's max TTL Vault "renews" for less than we asked: a fresh login
                # is the only way to get a full TTL back.
                if renewed.ttl >= state.ttl * _RENEW_AT_FRACTION:
                    return renewed
        if isinstance(self._credentials, Secret):
            return state
        return self._login()

    def current_token(self) -> tuple[TokenState | None, bool]:
        """For the event loop, without blocking: never takes the lock, which a login in
        another thread may hold for a whole round trip. Returns (a token state still valid,
        or None: log in first; whether renewal or re-login is due)."""
        state = self._state  # replaced whole, never mutated: one atomic read
        if state is None:
            return None, True
        remaining = state.remaining(self._clock())
        if remaining <= 0.5:
            return None, True
        due = (bool(state.ttl) and remaining < state.ttl * _RENEW_AT_FRACTION
               and self.renews_by_login)
        return state, due

    @property
    def renews_by_login(self) -> bool:
        """AppRole: a refused or expired token is replaced by a fresh login. A fixed token
        (operator CLI, bootstrap) cannot be replaced."""
        return not isinstance(self._credentials, Secret)

    def replace_token(self, refused: TokenState) -> None:
        """After a 403 on the event loop's client: log in again, unless another caller has
        already replaced that token."""
        with self._lock:
            if self._state is refused:
                self._state = None
        self._token_state()

    def invalidate_token(self) -> None:
        with self._lock:
            self._state = None

    def ensure_login(self) -> None:
        self._token_state()

    # -- requests -------------------------------------------------------------------

    def request(self, method: str, path: str, operation: str,
                payload: Mapping[str, Any] | None = None, *,
                retry_denied: bool = True) -> JSON:
        """One Vault API call with a valid token. A 403 right after the token expired on
        the server (clock skew, revocation) gets one fresh login and one retry; a second
        403 is a real denial and is raised. ``retry_denied=False``: a 403 is raised at once
        (``ivr-vault doctor``'s probes expect denials; a login may be a counted use)."""
        for attempt in (1, 2):
            self._token_state()
            try:
                response = self._on_any_node(operation, lambda node: node.adapter.request(
                    method, f"/v1/{path}", json=payload))
            except VaultPermissionDenied:
                if attempt == 2 or isinstance(self._credentials, Secret) or not retry_denied:
                    raise
                self.invalidate_token()
                continue
            if isinstance(response, dict):
                return response
            with translate_errors(operation, self.addr):
                if response.status_code == 204 or not response.content:
                    return {}
                body: JSON = response.json()
                if not isinstance(body, dict):
                    raise TypeError("not a JSON object")
                return body
        raise AssertionError("unreachable")

    def read(self, path: str, operation: str) -> JSON:
        return self.request("GET", path, operation)

    def write(self, path: str, operation: str, payload: Mapping[str, Any] | None = None) -> JSON:
        return self.request("POST", path, operation, payload or {})

    def download(self, path: str, operation: str) -> bytes:
        """A binary answer (a Raft snapshot), whole, in memory: a snapshot of this
        service's Vault is tens of KB (17 KB measured for a fresh one)."""
        self._token_state()
        response = self._on_any_node(operation, lambda node: node.adapter.request(
            "GET", f"/v1/{path}"))
        with translate_errors(operation, self.addr):
            if isinstance(response, dict):
                raise TypeError("a JSON answer where binary data was expected")
            return bytes(response.content)

    def upload(self, path: str, operation: str, data: bytes) -> None:
        """POST a binary body (a Raft snapshot to restore)."""
        self._token_state()
        self._on_any_node(operation, lambda node: node.adapter.request(
            "POST", f"/v1/{path}", data=data))

    def revoke_self(self) -> None:
        """Best effort on shutdown: a token nobody holds any more should not stay valid."""
        with self._lock:
            state, self._state = self._state, None
        if state is None or isinstance(self._credentials, Secret):
            return
        try:
            self._on_any_node("token revoke", lambda node: node.auth.token.revoke_self())
        except VaultError as exc:
            log.warning("vault token revoke failed", kind=exc.kind)

    def health(self) -> JSON:
        """Unauthenticated: sealed/standby/initialised state, from the first node that
        answers as an unsealed one (active or standby)."""

        def ask(node: hvac.Client) -> JSON:
            response = node.adapter.request(
                "GET", "/v1/sys/health", raise_exception=False,
                params={"standbyok": "true", "perfstandbyok": "true"})
            # hvac's JSON adapter hands back a 200 already parsed, any other status raw.
            if isinstance(response, dict):
                return response
            if response.status_code in (429, 473):
                result: JSON = response.json()
                return result
            raise hvac.exceptions.VaultDown(f"health: Vault answered {response.status_code}")

        return self._on_any_node("health", ask)

    def close(self) -> None:
        self._hvac.adapter.close()  # the one session every node's client shares
