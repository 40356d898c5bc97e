"""Slow and oversized clients (docs/security.md, "slow clients"), on real processes: the webhook
behind the real
Caddy (proxy/Caddyfile with proxy/servers.caddy) with TLS, and the webhook alone.

The review's attack: 40 TLS connections to Caddy, each sending about 900 KiB of headers
and ``Content-Length: 16000``, then 1 byte every 5 s; after 70 s all 40 were open and held
40 connections on the webhook. Here the same at a smaller scale (1 byte a second, Caddy's
read timeouts shortened to 3 s for headers and 4 s for the whole request, so the test
takes well under a minute), in three kinds: oversized headers, headers sent slowly, a body
sent slowly. Every connection is closed within its timeout, and whole signed calls placed
during the attack complete. Straight to the webhook (a deployment without our proxy), a
32 MB header is refused after 16 KiB and slow headers or bodies are cut off at 10 s.
"""

from __future__ import annotations

import socket
import ssl
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from service.devtools.caller import Caller
from service.devtools.devstack import DevVault, free_port
from service.vault.bootstrap import RoleCredentials
from service.web.limits import BODY_TIMEOUT_S
from service.web.slow_clients import HEADER_TIMEOUT_S, MAX_HEADER_BYTES
from tests.support.caddy import Caddy, Proxied, proxied_stack
from tests.support.demo import FOUND
from tests.support.tools import require

READ_HEADER_S, READ_BODY_S = 3.0, 4.0
SLACK_S = 2.5  # a loaded machine's scheduling, and the 1 s between the attacker's bytes
GIVE_UP_S = 25.0  # the attacker stops here: a connection still open then was never closed
PAD = b"X-Pad: " + b"a" * 1000 + b"\r\n"


@pytest.fixture(scope="module")
def proxied(
    dev_vault: DevVault,
    credentials: dict[str, RoleCredentials],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Proxied]:
    require("caddy")
    yield from proxied_stack(
        dev_vault,
        credentials,
        tmp_path_factory.mktemp("slow"),
        {"PUBLIC_BASE_URL": "", "TRUSTED_PROXIES": "127.0.0.1/32"},
        free_port(),
        caddy_env={
            "CADDY_READ_HEADER_TIMEOUT": f"{READ_HEADER_S:g}s",
            "CADDY_READ_BODY_TIMEOUT": f"{READ_BODY_S:g}s",
        },
    )


Connect = Callable[[], socket.socket]


def request_head(extra: bytes = b"") -> bytes:
    return (
        b"POST /voice/card HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n" + extra
    )


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection (an answer first, such as 408 or 431,
    is read and dropped)."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
        return False
    except OSError:
        return True


def attacker(connect: Connect, kind: str) -> float:
    """One slow or oversized client; seconds from connecting until the server closed it
    (:data:`GIVE_UP_S` if it never did)."""
    start = time.monotonic()
    sock = connect()
    sock.settimeout(0.05)
    try:
        try:
            if kind == "big headers":  # ~900 KiB of headers, then a slow body
                sock.sendall(request_head(b"Content-Length: 16000\r\n"))
                for _ in range(900):
                    sock.sendall(PAD)
                sock.sendall(b"\r\n")
                drip = b"a"
            elif kind == "slow headers":
                sock.sendall(request_head())
                drip = b"x"
            else:  # "slow body"
                sock.sendall(request_head(b"Content-Length: 16000\r\n\r\n"))
                drip = b"a"
            while time.monotonic() - start < GIVE_UP_S:
                if _closed(sock):
                    break
                time.sleep(1.0)
                sock.sendall(drip)
        except OSError:  # reset or broken pipe: closed by the server
            pass
        return time.monotonic() - start
    finally:
        sock.close()


def tls_connect(caddy: Caddy) -> Connect:
    context = ssl.create_default_context(cafile=str(caddy.root_ca))

    def connect() -> socket.socket:
        raw = socket.create_connection(("127.0.0.1", caddy.port), timeout=10)
        return context.wrap_socket(raw, server_hostname="localhost")

    return connect


def plain_connect(port: int) -> Connect:
    return lambda: socket.create_connection(("127.0.0.1", port), timeout=10)


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


KINDS = ["big headers"] * 14 + ["slow headers"] * 13 + ["slow body"] * 13  # 40


def test_slow_clients_through_caddy_are_cut_off_and_calls_go_on(proxied: Proxied) -> None:
    caddy, stack = proxied.caddy, proxied.stack
    assert stack.webhook.process is not None
    rss_before = rss_mb(stack.webhook.process.pid)
    connect = tls_connect(caddy)
    call_ms: list[float] = []
    heard: list[str] = []
    done = threading.Event()

    def calls() -> None:
        with caddy.client() as client:
            while not done.is_set():
                start = time.monotonic()
                said: list[str] = []
                result = Caller(caddy.url, stack.twilio_token, client, say=said.append).play(
                    ["1234", "4321"]
                )
                call_ms.append((time.monotonic() - start) * 1000 / len(result.statuses))
                heard.append(said[-1] if result.completed and said else repr(result))
                time.sleep(0.2)

    with ThreadPoolExecutor(max_workers=len(KINDS) + 2) as pool:
        callers = [pool.submit(calls) for _ in range(2)]
        lives = list(pool.map(lambda kind: (kind, attacker(connect, kind)), KINDS))
        done.set()
        for caller in callers:
            caller.result()
    rss_after = rss_mb(stack.webhook.process.pid)
    by_kind = {kind: max(life for k, life in lives if k == kind) for kind in set(KINDS)}
    print(
        f"\nslow clients through Caddy: longest life {by_kind}; {len(call_ms)} calls "
        f"during the attack, p99 per request {p99(call_ms):.0f} ms; webhook RSS "
        f"{rss_before:.0f} -> {rss_after:.0f} MB"
    )
    assert by_kind["slow headers"] <= READ_HEADER_S + SLACK_S, by_kind
    assert by_kind["slow body"] <= READ_BODY_S + SLACK_S, by_kind
    assert by_kind["big headers"] <= READ_BODY_S + SLACK_S, by_kind
    assert len(heard) >= 10 and set(heard) == {FOUND}, heard


def test_slow_clients_straight_to_the_webhook_are_cut_off(proxied: Proxied) -> None:
    """A deployment without our proxy: uvicorn's httptools had no header deadline and no
    header size cap (a 32 MB header was read whole), and the body limit waited forever."""
    stack = proxied.stack
    connect = plain_connect(stack.webhook.port)
    with ThreadPoolExecutor(max_workers=3) as pool:
        slow = {
            kind: pool.submit(attacker, connect, kind) for kind in ("slow headers", "slow body")
        }
        sent, answer = huge_header(connect)
        lives = {kind: future.result() for kind, future in slow.items()}
    print(
        f"\nstraight to the webhook: {lives}; a 32 MB header refused after "
        f"{sent / 1024:.0f} KiB: {answer!r}"
    )
    assert lives["slow headers"] <= HEADER_TIMEOUT_S + SLACK_S, lives
    assert lives["slow body"] <= BODY_TIMEOUT_S + SLACK_S, lives
    # 431, or a reset that overtook it (the server closed with the client's bytes unread)
    assert answer.startswith(b"HTTP/1.1 431 ") or answer == b"", answer
    assert sent < 8 * 1024 * 1024  # the server stopped reading long before 32 MB
    heard: list[str] = []
    with httpx.Client(timeout=20) as client:  # and it still serves
        Caller(stack.webhook.url, stack.twilio_token, client, say=heard.append).play(
            ["1234", "4321"]
        )
    assert heard[-1] == FOUND


def huge_header(connect: Connect) -> tuple[int, bytes]:
    """Send one 32 MB header; how much the server took before it answered or closed, and
    what it answered."""
    sock = connect()
    sock.settimeout(5)
    sent = 0
    try:
        sock.sendall(request_head() + b"X-Huge: ")
        chunk = b"a" * 65536
        while sent < 32 * 1024 * 1024:
            sock.sendall(chunk)
            sent += len(chunk)
        sock.sendall(b"\r\n\r\n")
    except OSError:
        pass
    try:
        answer = sock.recv(200)
    except OSError:
        answer = b""
    sock.close()
    assert sent > MAX_HEADER_BYTES
    return sent, answer
