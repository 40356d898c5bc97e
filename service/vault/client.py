"""A blocking Vault client: hvac's transport wrapped, with AppRole login, token renewal
and one error tree.

hvac is synchronous; this module never touches the event loop. It serves login, renewal,
admin and the CLI; Transit's hot path goes through :mod:`service.vault.async_client`, which
shares this client's :class:`~service.vault.base.Target`, node order and
:class:`~service.vault.base.TokenKeeper`, and calls it in a thread pool only to log in or
renew. What both clients do alike (fail-over, the status -> error table, body parsing, when
to renew) is :mod:`service.vault.base`; this module only sends. Every call has a timeout,
every foreign exception (hvac, requests) is translated here into :mod:`service.errors`, and
the token is renewed before it expires and replaced by a fresh login when renewal is
refused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hvac
import hvac.adapters
import hvac.exceptions
import requests
import requests.adapters
import requests.utils
import structlog

from service.errors import (
    VaultAuthError,
    VaultError,
    VaultPermissionDenied,
    VaultRequestError,
    VaultUnavailable,
)
from service.settings import Secret, Settings
from service.vault.base import (
    JSON,
    Target,
    TokenKeeper,
    TokenState,
    error_for_status,
    fails_over,
    no_answer,
    parse_body,
    unexpected,
)
from service.vault.jwt_login import JwtCredentials
from service.web.failover import Endpoints

log = structlog.get_logger("ivr.vault")

# The status of each hvac exception, for the calls made through hvac's own methods
# (service/vault/operator_init.py): the same table as every other answer.
_HVAC_STATUS: dict[type[hvac.exceptions.VaultError], int] = {
    hvac.exceptions.InvalidRequest: 400,
    hvac.exceptions.Unauthorized: 401,
    hvac.exceptions.Forbidden: 403,
    hvac.exceptions.InvalidPath: 404,
    hvac.exceptions.PreconditionFailed: 412,
    hvac.exceptions.RateLimitExceeded: 429,
    hvac.exceptions.InternalServerError: 500,
    hvac.exceptions.VaultNotInitialized: 501,
    hvac.exceptions.BadGateway: 502,
    hvac.exceptions.VaultDown: 503,
}


@dataclass(frozen=True)
class AppRoleCredentials:
    role_id: Secret
    secret_id: Secret


Credentials = AppRoleCredentials | JwtCredentials | Secret


def choose_credentials(
    settings: Settings,
    *,
    approle_dir: Path | None = None,
) -> Credentials | None:
    """Who to be: with VAULT_AUTH=jwt, the service-account token as VAULT_JWT_ROLE; else
    VAULT_ROLE_ID/VAULT_SECRET_ID (or ``*_FILE``); else the ``role_id`` and
    ``secret_id`` files in ``approle_dir`` when given and present; else VAULT_TOKEN; None
    when there is nothing. The service's identity comes first, so that a broader token
    left in the environment is not used when the narrower identity is at hand."""
    if settings.vault_auth == "jwt" and settings.vault_jwt_role:
        return JwtCredentials(
            settings.vault_jwt_role, Path(settings.vault_jwt_token_path), settings.vault_jwt_mount
        )
    if settings.vault_role_id and settings.vault_secret_id:
        return AppRoleCredentials(settings.vault_role_id, settings.vault_secret_id)
    if approle_dir is not None and all(
        (approle_dir / name).is_file() for name in ("role_id", "secret_id")
    ):
        return AppRoleCredentials(
            Secret((approle_dir / "role_id").read_text(encoding="utf-8").strip()),
            Secret((approle_dir / "secret_id").read_text(encoding="utf-8").strip()),
        )
    return settings.vault_token


@contextmanager
def translate_errors(operation: str, addr: str | None = None) -> Iterator[None]:
    """Turn hvac and requests exceptions into ours, by the one status table
    (:func:`~service.vault.base.error_for_status`). The message names the operation, the
    status and the node asked (``addr``); it never includes a request or response body
    (they may hold plaintext)."""
    try:
        yield
    except hvac.exceptions.InvalidRequest as exc:
        json_body = getattr(exc, "json", None)
        raise VaultRequestError(
            f"{operation}: Vault refused the request",
            response_json=json_body if isinstance(json_body, dict) else None,
            addr=addr,
            status=400,
        ) from None
    except hvac.exceptions.VaultError as exc:
        status = _HVAC_STATUS.get(type(exc))
        if status is None:
            raise VaultError(
                f"{operation}: Vault error ({type(exc).__name__})", addr=addr
            ) from None
        raise error_for_status(status, operation, addr=addr) from None
    except requests.exceptions.JSONDecodeError:
        # Before RequestException, of which it is a subclass: Vault was reached.
        raise unexpected(operation, addr) from None
    except requests.exceptions.Timeout:
        raise no_answer(operation, timed_out=True, addr=addr) from None
    except requests.exceptions.RequestException:
        raise no_answer(operation, timed_out=False, addr=addr) from None
    except (KeyError, TypeError, ValueError):
        # A 200 that is not Vault's JSON (a proxy's error page, a truncated body): the
        # answer cannot be trusted, and must not escape as a foreign exception.
        raise unexpected(operation, addr) from None


def _node_of(response: requests.Response) -> str:
    """The node that gave ``response`` (``http://host:port``), for the error's message."""
    url = urlsplit(response.url)
    return f"{url.scheme}://{url.netloc}"


class VaultClient:
    """Blocking, thread-safe Vault access for one identity.

    ``credentials`` is an AppRole (services) or a fixed token (operator CLI, bootstrap).
    ``clock`` is injectable so that renewal logic can be tested without sleeping.
    Shared with the event loop's client (:class:`~service.vault.async_client.AsyncVault`):
    ``target`` (where and how to connect), ``endpoints`` (which node works) and ``tokens``
    (the identity's one token).
    """

    def __init__(
        self,
        addr: str | Sequence[str],
        credentials: Credentials,
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
        proxies = {a: requests.utils.get_environ_proxies(a) for a in addrs}
        if verify is True:
            verify = (
                os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
            )
        session.trust_env = False
        # hvac takes verification from a session it is given (its verify= is ignored when
        # the session's is truthy, as a new session's is): set it here, or VAULT_CACERT is
        # never used and a private CA's certificate is refused.
        session.verify = verify
        self.target = Target(
            tuple(addrs),
            timeout,
            verify,
            {a: requests.utils.select_proxy(a, proxies[a]) for a in addrs},
        )
        # A pool as large as the thread pool that uses it, so concurrent batches keep
        # their keep-alive connections instead of opening new ones (per node).
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=max(2, len(addrs)), pool_maxsize=pool_size
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        # One hvac transport per node over the one session: a thread never changes another
        # thread's target address. Raw: every answer comes back as it is, and the rules of
        # service/vault/base.py decide what it means.
        self._nodes = {
            a: hvac.Client(
                url=a,
                timeout=timeout,
                verify=verify,
                session=session,
                proxies=proxies[a],
                adapter=hvac.adapters.RawAdapter,
            )
            for a in addrs
        }
        self._credentials = credentials
        fixed = isinstance(credentials, Secret)
        self.tokens = TokenKeeper(self._login, None if fixed else self._renew, clock=clock)
        self._clock = clock
        self.logins = 0
        self.renewals = 0

    @property
    def addr(self) -> str:
        """The node calls go to now."""
        return self.endpoints.current

    @property
    def _hvac(self) -> hvac.Client:
        return self._nodes[self.endpoints.current]

    def _set_token(self, token: str | None) -> None:
        for node in self._nodes.values():
            node.token = token

    def _send(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        answers: Callable[[int], bool] = lambda status: not fails_over(status),
        refusal: Callable[[int, str, bytes, str], VaultError] = error_for_status,
        **kwargs: Any,
    ) -> requests.Response:
        """One call on the node that last worked; on no answer or an answer that
        :func:`~service.vault.base.fails_over` (or that ``answers`` rejects), on the next
        (each node once). The last node's failure is raised, translated; an answer is
        returned whatever its status."""
        order = self.endpoints.order()
        for tried, addr in enumerate(order, start=1):
            last = tried == len(order)
            try:
                response: requests.Response = self._nodes[addr].adapter.request(
                    method, f"/v1/{path}", raise_exception=False, **kwargs
                )
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                self.endpoints.failed(addr)
                if last:
                    timed_out = isinstance(exc, requests.exceptions.Timeout)
                    raise no_answer(operation, timed_out=timed_out, addr=addr) from None
                continue
            except requests.exceptions.RequestException:
                raise no_answer(operation, timed_out=False, addr=addr) from None
            if answers(response.status_code):
                self.endpoints.worked(addr)
                return response
            self.endpoints.failed(addr)
            if last:
                raise refusal(response.status_code, operation, response.content, addr)
        raise AssertionError("unreachable")

    def _json(self, operation: str, method: str, path: str, **kwargs: Any) -> JSON:
        response = self._send(operation, method, path, **kwargs)
        return parse_body(response.status_code, response.content, operation, _node_of(response))

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        pool_size: int = 32,
        credentials: Credentials | None = None,
        timeout: float | None = None,
    ) -> VaultClient:
        """A client for VAULT_ADDR (trusting VAULT_CACERT) as ``credentials``, by default
        those :func:`choose_credentials` finds in the settings."""
        creds = credentials or choose_credentials(settings)
        if creds is None:
            raise VaultAuthError(
                "no Vault credentials: set VAULT_ROLE_ID and VAULT_SECRET_ID, "
                "or VAULT_AUTH=jwt and VAULT_JWT_ROLE"
            )
        verify: str | bool = settings.vault_cacert or True
        return cls(
            settings.vault_addr,
            creds,
            verify=verify,
            pool_size=pool_size,
            timeout=settings.vault_timeout if timeout is None else timeout,
        )

    # -- authentication ---------------------------------------------------------------

    def _login(self) -> TokenState:
        now = self._clock()
        if isinstance(self._credentials, Secret):
            self._set_token(self._credentials.reveal())
            data = self._json("token lookup", "GET", "auth/token/lookup-self")
            with translate_errors("token lookup", self.addr):
                state = TokenState(
                    self._credentials,
                    now,
                    float(data["data"].get("ttl") or 0),
                    bool(data["data"].get("renewable")),
                )
        elif isinstance(self._credentials, JwtCredentials):
            jwt_credentials = self._credentials
            try:
                answer = self._json(
                    "jwt login",
                    "POST",
                    f"auth/{jwt_credentials.mount}/login",
                    json={"role": jwt_credentials.role, "jwt": jwt_credentials.read_token()},
                )
            except (VaultPermissionDenied, VaultRequestError) as exc:
                raise VaultAuthError(
                    f"jwt login: service-account token refused for role {jwt_credentials.role}",
                    addr=exc.addr,
                    status=exc.status,
                ) from None
            with translate_errors("jwt login", self.addr):
                auth = answer["auth"]
                state = TokenState(
                    Secret(auth["client_token"]),
                    now,
                    float(auth["lease_duration"]),
                    bool(auth["renewable"]),
                )
            self._set_token(state.token.reveal())
        else:
            credentials = self._credentials
            try:
                answer = self._json(
                    "approle login",
                    "POST",
                    "auth/approle/login",
                    json={
                        "role_id": credentials.role_id.reveal(),
                        "secret_id": credentials.secret_id.reveal(),
                    },
                )
            except (VaultPermissionDenied, VaultRequestError) as exc:
                raise VaultAuthError(
                    "approle login: role-id or secret-id refused", addr=exc.addr, status=exc.status
                ) from None
            with translate_errors("approle login", self.addr):
                auth = answer["auth"]
                state = TokenState(
                    Secret(auth["client_token"]),
                    now,
                    float(auth["lease_duration"]),
                    bool(auth["renewable"]),
                )
            self._set_token(state.token.reveal())
        self.logins += 1
        log.info("vault login", ttl_s=state.ttl, renewable=state.renewable)
        return state

    def _renew(self, state: TokenState) -> TokenState:
        now = self._clock()
        answer = self._json("token renew", "POST", "auth/token/renew-self", json={})
        with translate_errors("token renew", self.addr):
            auth = answer["auth"]
            renewed = TokenState(
                state.token, now, float(auth["lease_duration"]), bool(auth["renewable"])
            )
        self.renewals += 1
        return renewed

    def ensure_login(self) -> None:
        self.tokens.valid()

    # -- requests -------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        operation: str,
        payload: Mapping[str, Any] | None = None,
        *,
        retry_denied: bool = True,
    ) -> JSON:
        """One Vault API call with a valid token. A 403 right after the token expired on
        the server (clock skew, revocation) gets one fresh login and one retry; a second
        403 is a real denial and is raised. ``retry_denied=False``: a 403 is raised at once
        (``ivr-vault doctor``'s probes expect denials; a login may be a counted use)."""
        for attempt in (1, 2):
            state = self.tokens.valid()
            try:
                return self._json(operation, method, path, json=payload)
            except VaultPermissionDenied:
                if not retry_denied or not self.tokens.retry_after_denial(state, attempt):
                    raise
        raise AssertionError("unreachable")

    def read(self, path: str, operation: str) -> JSON:
        return self.request("GET", path, operation)

    def write(self, path: str, operation: str, payload: Mapping[str, Any] | None = None) -> JSON:
        return self.request("POST", path, operation, payload or {})

    def download(self, path: str, operation: str) -> bytes:
        """A binary answer (a Raft snapshot), whole, in memory: a snapshot of this
        service's Vault is tens of KB (17 KB measured for a fresh one)."""
        self.tokens.valid()
        response = self._send(operation, "GET", path)
        if response.status_code >= 300:
            raise error_for_status(
                response.status_code, operation, response.content, _node_of(response)
            )
        return bytes(response.content)

    def upload(self, path: str, operation: str, data: bytes) -> None:
        """POST a binary body (a Raft snapshot to restore)."""
        self.tokens.valid()
        response = self._send(operation, "POST", path, data=data)
        if response.status_code >= 300:
            raise error_for_status(
                response.status_code, operation, response.content, _node_of(response)
            )

    def revoke_self(self) -> None:
        """Best effort on shutdown: a token nobody holds any more should not stay valid."""
        state = self.tokens.forget()
        if state is None or not self.tokens.replaceable:
            return
        try:
            self._json("token revoke", "POST", "auth/token/revoke-self")
        except VaultError as exc:
            log.warning("vault token revoke failed", kind=exc.kind)

    def health(self) -> JSON:
        """Unauthenticated: sealed/standby/initialised state, from the first node that
        answers as an unsealed one (active or standby: 200, 429, 473)."""
        response = self._send(
            "health",
            "GET",
            "sys/health",
            answers=lambda status: status in (200, 429, 473),
            refusal=lambda status, operation, _, addr: VaultUnavailable(
                f"{operation}: Vault is sealed or failing", addr=addr, status=status
            ),
            params={"standbyok": "true", "perfstandbyok": "true"},
        )
        return parse_body(200, response.content, "health", _node_of(response))

    def close(self) -> None:
        self._hvac.adapter.close()  # the one session every node's client shares
