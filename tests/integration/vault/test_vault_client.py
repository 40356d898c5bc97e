"""VaultClient against the real OpenBao: AppRole login, renewal of a short-TTL token,
re-login when renewal is refused, and every failure translated into service.errors."""

from __future__ import annotations

import asyncio
import base64
import http.server
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import pytest

from service.devtools.devstack import DevVault, free_port
from service.errors import (
    IvrVaultError,
    VaultAuthError,
    VaultError,
    VaultPermissionDenied,
    VaultTimeout,
    VaultUnavailable,
)
from service.settings import Secret
from service.vault.async_client import AsyncVault
from service.vault.bootstrap import Layout
from service.vault.client import AppRoleCredentials, VaultClient

TTL_S = 3
CONTEXT = base64.b64encode(b"CA00000000000000000000000000000000:pin").decode()


def short_role(
    admin: VaultClient,
    name: str,
    *,
    ttl: str,
    max_ttl: str,
) -> AppRoleCredentials:
    """A throw-away AppRole with the webhook's policy and a very short token TTL."""
    admin.write(
        f"auth/approle/role/{name}",
        "write role",
        {
            "token_policies": ["ivr-webhook"],
            "token_no_default_policy": True,
            "token_ttl": ttl,
            "token_max_ttl": max_ttl,
            "token_type": "service",
        },
    )
    role_id = admin.read(f"auth/approle/role/{name}/role-id", "role-id")["data"]["role_id"]
    secret_id = admin.write(f"auth/approle/role/{name}/secret-id", "secret-id")["data"]["secret_id"]
    return AppRoleCredentials(Secret(role_id), Secret(secret_id))


def encrypt(client: VaultClient) -> str:
    answer = client.write(
        "transit/encrypt/ivr-dtmf",
        "encrypt",
        {"plaintext": base64.b64encode(b"4321").decode(), "context": CONTEXT},
    )
    ciphertext: str = answer["data"]["ciphertext"]
    return ciphertext


def keep_calling(client: VaultClient, seconds: float) -> int:
    """Encrypt every 0.2 s for ``seconds``; every call must succeed."""
    calls = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert encrypt(client).startswith("vault:v")
        calls += 1
        time.sleep(0.2)
    return calls


def current_token(client: VaultClient) -> str:
    token: str = client._hvac.token  # the token, to revoke it from outside
    return token


@pytest.fixture(autouse=True)
def _bootstrapped(layout: Layout) -> None:
    """The AppRole mount and the ivr-webhook policy the short roles use."""


@pytest.fixture
def client_factory(dev_vault: DevVault) -> Iterator[Callable[[AppRoleCredentials], VaultClient]]:
    made: list[VaultClient] = []

    def make(creds: AppRoleCredentials) -> VaultClient:
        client = VaultClient(dev_vault.addr, creds, timeout=5)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def test_short_ttl_token_is_renewed_not_replaced(
    admin: VaultClient, client_factory: Callable[[AppRoleCredentials], VaultClient]
) -> None:
    client = client_factory(short_role(admin, "test-renew", ttl=f"{TTL_S}s", max_ttl="1h"))
    client.ensure_login()
    first = current_token(client)
    keep_calling(client, TTL_S * 2.2)  # well past one TTL
    assert client.logins == 1
    assert client.renewals >= 2
    assert current_token(client) == first
    # Vault agrees the token is alive and was renewed: its TTL is still within bounds.
    ttl = admin.write("auth/token/lookup", "lookup", {"token": first})["data"]["ttl"]
    assert 0 < ttl <= TTL_S


def test_refused_renewal_leads_to_a_fresh_login(
    admin: VaultClient, client_factory: Callable[[AppRoleCredentials], VaultClient]
) -> None:
    client = client_factory(short_role(admin, "test-relogin", ttl=f"{TTL_S}s", max_ttl="1h"))
    encrypt(client)
    revoked = current_token(client)
    admin.write("auth/token/revoke", "revoke", {"token": revoked})
    # Into the renewal window: the client tries to renew the dead token, is refused,
    # and logs in again; the caller of encrypt() notices nothing.
    time.sleep(TTL_S * 0.75)
    renewals = client.renewals
    assert encrypt(client).startswith("vault:v")
    assert client.logins == 2
    assert client.renewals == renewals
    assert current_token(client) != revoked
    keep_calling(client, 1.0)
    assert client.logins == 2


def test_revoked_token_mid_ttl_gets_one_relogin(
    admin: VaultClient, client_factory: Callable[[AppRoleCredentials], VaultClient]
) -> None:
    client = client_factory(short_role(admin, "test-revoked", ttl="1h", max_ttl="2h"))
    encrypt(client)
    admin.write("auth/token/revoke", "revoke", {"token": current_token(client)})
    assert encrypt(client).startswith("vault:v")
    assert client.logins == 2


def test_max_ttl_reached_leads_to_a_fresh_login(
    admin: VaultClient, client_factory: Callable[[AppRoleCredentials], VaultClient]
) -> None:
    client = client_factory(short_role(admin, "test-maxttl", ttl="2s", max_ttl="3s"))
    keep_calling(client, 4.5)
    assert client.logins >= 2


def test_wrong_secret_id_is_an_auth_error(
    dev_vault: DevVault,
    admin: VaultClient,
    client_factory: Callable[[AppRoleCredentials], VaultClient],
) -> None:
    good = short_role(admin, "test-wrong-secret", ttl="1h", max_ttl="1h")
    client = client_factory(AppRoleCredentials(good.role_id, Secret("not-the-secret-id")))
    with pytest.raises(VaultAuthError) as caught:
        client.ensure_login()
    assert "not-the-secret-id" not in str(caught.value)


def test_a_real_denial_is_raised_after_one_relogin(
    admin: VaultClient, client_factory: Callable[[AppRoleCredentials], VaultClient]
) -> None:
    client = client_factory(short_role(admin, "test-denied", ttl="1h", max_ttl="1h"))
    with pytest.raises(VaultPermissionDenied):
        client.read("transit/keys/ivr-dtmf", "read key")
    assert client.logins == 2  # one retry with a fresh token, not a loop


# -- failures translated at the boundary ----------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers: a hung Vault."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


@pytest.mark.parametrize("credentials", ["token", "approle"])
def test_hung_vault_times_out_within_the_timeout(silent_server: int, credentials: str) -> None:
    creds: AppRoleCredentials | Secret = (
        Secret("t") if credentials == "token" else AppRoleCredentials(Secret("r"), Secret("s"))
    )
    client = VaultClient(f"http://127.0.0.1:{silent_server}", creds, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(VaultTimeout):
        client.write("transit/encrypt/ivr-dtmf", "encrypt", {})
    assert time.monotonic() - started < 2.0
    with pytest.raises(VaultTimeout):
        client.health()


def test_paused_dev_vault_times_out(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Our own Vault, SIGSTOPped: the session Vault is never paused."""
    vault = DevVault.start(tmp_path_factory.mktemp("paused-vault"))
    try:
        client = VaultClient(vault.addr, vault.root_token, timeout=0.5)
        assert client.health()["initialized"] is True
        vault.pause()
        started = time.monotonic()
        with pytest.raises(VaultTimeout):
            client.read("sys/mounts", "list mounts")
        assert time.monotonic() - started < 2.0
        vault.resume()
        assert "transit/" not in client.read("sys/mounts", "list mounts")["data"]
    finally:
        vault.resume()
        vault.stop()


class _Broken(http.server.BaseHTTPRequestHandler):
    """A server that answers like no Vault should."""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        status, body, ctype = {
            "/v1/garbage": (200, b"<html>proxy error page</html>", "text/html"),
            "/v1/teapot": (418, b"short and stout", "text/plain"),
            "/v1/sealed": (503, b'{"errors":["Vault is sealed"]}', "application/json"),
            "/v1/auth/approle/login": (200, b'{"data": {}}', "application/json"),
            "/v1/auth/token/lookup-self": (200, b'{"data": {"ttl": 0}}', "application/json"),
            "/v1/sys/health": (200, b"not json", "text/plain"),
        }.get(self.path.split("?")[0], (500, b"internal", "text/plain"))
        if self.path.startswith("/v1/reset"):
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def broken_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


# What each broken_server path answers, and the error both clients must make of it.
ODD_ANSWERS = [
    ("garbage", VaultError),
    ("teapot", VaultError),
    ("sealed", VaultUnavailable),
    ("failing", VaultUnavailable),
    ("reset", VaultUnavailable),
]


@pytest.mark.parametrize(("path", "expected"), ODD_ANSWERS)
def test_odd_answers_become_our_errors(
    broken_server: str, path: str, expected: type[VaultError]
) -> None:
    client = VaultClient(broken_server, Secret("t"), timeout=2)
    with pytest.raises(expected) as caught:
        client.write(path, "probe", {"plaintext": "MTIzNA=="})
    assert isinstance(caught.value, IvrVaultError)
    assert "MTIzNA" not in str(caught.value)
    if path == "garbage":  # reached, but not Vault's answer: not "cannot reach Vault"
        assert type(caught.value) is VaultError
        assert "unexpected answer" in str(caught.value)


def test_odd_login_and_health_answers_become_our_errors(broken_server: str) -> None:
    client = VaultClient(broken_server, AppRoleCredentials(Secret("r"), Secret("s")), timeout=2)
    with pytest.raises(VaultError):
        client.ensure_login()
    with pytest.raises(VaultError):
        client.health()


# -- the event loop's client (AsyncVault): same identity, same errors --------------------


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, bool]]:
    """uvloop, as the services run (overrides the suite's plain asyncio)."""
    return ("asyncio", {"use_uvloop": True})


@asynccontextmanager
async def aio_for(client: VaultClient) -> AsyncIterator[AsyncVault]:
    """An AsyncVault borrowing ``client``'s token; closed afterwards."""
    with ThreadPoolExecutor(2) as executor:
        aio = AsyncVault(client, executor=executor)
        try:
            yield aio
        finally:
            await aio.aclose()


async def aio_encrypt(aio: AsyncVault) -> str:
    answer = await aio.write(
        "transit/encrypt/ivr-dtmf",
        "encrypt",
        {"plaintext": base64.b64encode(b"4321").decode(), "context": CONTEXT},
    )
    ciphertext: str = answer["data"]["ciphertext"]
    return ciphertext


@pytest.mark.anyio
async def test_async_client_shares_the_login_and_renews_off_the_loop(
    admin: VaultClient, client_factory: Callable[[AppRoleCredentials], VaultClient]
) -> None:
    """Short-TTL token: every call succeeds on the one login, renewals happen in the
    pool (never on the event loop, which keeps ticking every 10 ms meanwhile)."""
    client = client_factory(short_role(admin, "test-aio-renew", ttl=f"{TTL_S}s", max_ttl="1h"))

    stall = 0.0
    async with aio_for(client) as aio:
        deadline = time.monotonic() + TTL_S * 2.2
        while time.monotonic() < deadline:
            assert (await aio_encrypt(aio)).startswith("vault:v")
            before = time.monotonic()
            await asyncio.sleep(0.01)
            stall = max(stall, time.monotonic() - before - 0.01)
            await asyncio.sleep(0.19)
    assert client.logins == 1
    assert client.renewals >= 2
    assert stall < 0.2


@pytest.mark.anyio
async def test_async_client_relogs_in_once_after_a_403(
    admin: VaultClient, client_factory: Callable[[AppRoleCredentials], VaultClient]
) -> None:
    client = client_factory(short_role(admin, "test-aio-revoked", ttl="1h", max_ttl="2h"))
    encrypt(client)
    admin.write("auth/token/revoke", "revoke", {"token": current_token(client)})
    async with aio_for(client) as aio:
        assert (await aio_encrypt(aio)).startswith("vault:v")  # 403, login, retry
        assert client.logins == 2
        with pytest.raises(VaultPermissionDenied):  # the webhook's policy: no decrypt
            await aio.write("transit/decrypt/ivr-dtmf", "decrypt", {"ciphertext": "vault:v1:QUJD"})
    assert client.logins == 3  # one fresh login for the real denial, not a loop


@pytest.mark.anyio
async def test_async_client_times_out_a_hung_vault_within_the_budget(
    silent_server: int,
) -> None:
    client = VaultClient(f"http://127.0.0.1:{silent_server}", Secret("t"), timeout=0.5)
    ticks = 0
    async with aio_for(client) as aio:
        task = asyncio.ensure_future(aio.write("transit/encrypt/ivr-dtmf", "encrypt", {}))
        started = time.monotonic()
        while not task.done():
            ticks += 1
            await asyncio.sleep(0.01)
        took = time.monotonic() - started
        with pytest.raises(VaultTimeout):
            task.result()
    assert 0.4 < took < 1.5  # VAULT_TIMEOUT bounds the whole call
    assert ticks >= 20  # the loop kept running meanwhile


@pytest.mark.anyio
async def test_async_client_unreachable_vault_is_unavailable_not_a_timeout() -> None:
    client = VaultClient(f"http://127.0.0.1:{free_port()}", Secret("t"), timeout=2)
    with pytest.raises(VaultUnavailable) as caught:
        async with aio_for(client) as aio:
            await aio_encrypt(aio)
    assert not isinstance(caught.value, VaultTimeout)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(("path", "expected"), ODD_ANSWERS)
@pytest.mark.anyio
async def test_async_client_odd_answers_become_the_same_errors(
    broken_server: str, path: str, expected: type[VaultError]
) -> None:
    client = VaultClient(broken_server, Secret("t"), timeout=2)
    with pytest.raises(expected) as caught:
        async with aio_for(client) as aio:
            await aio.write(path, "probe", {"plaintext": "MTIzNA=="})
    assert type(caught.value) is expected
    assert "MTIzNA" not in str(caught.value)
    with pytest.raises(expected) as blocking:  # the blocking client says the same
        client.write(path, "probe", {"plaintext": "MTIzNA=="})
    assert type(blocking.value) is type(caught.value)


@pytest.mark.anyio
async def test_async_client_sealed_vault_is_unavailable(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A real dev Vault, sealed: 503, VaultUnavailable, as hvac's VaultDown becomes."""
    vault = DevVault.start(tmp_path_factory.mktemp("sealed-vault"))
    try:
        client = VaultClient(vault.addr, vault.root_token, timeout=2)
        client.write("sys/mounts/transit", "mount", {"type": "transit"})
        client.write("transit/keys/ivr-dtmf", "key", {"derived": True})
        async with aio_for(client) as aio:
            assert (await aio_encrypt(aio)).startswith("vault:v1:")
            client.write("sys/seal", "seal")
            with pytest.raises(VaultUnavailable) as caught:
                await aio_encrypt(aio)
        assert not isinstance(caught.value, VaultTimeout)
    finally:
        vault.stop()
