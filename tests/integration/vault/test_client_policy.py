"""One policy, two clients: the blocking VaultClient (hvac's transport) and the event loop's
AsyncVault (aiohttp) are fed the same statuses and failures by real HTTP servers on
loopback, and must make the same errors and fail over alike (service/vault/base.py).

Two nodes: the first answers what the case says, the second a good answer. A status or
failure only that node gives (no answer, a 5xx) makes both clients try the second; a 4xx is
the cluster's answer, raised without asking the second. With the first node alone, its
answer is the error.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.devtools.devstack import free_port
from service.errors import (
    VaultError,
    VaultNotFound,
    VaultPermissionDenied,
    VaultRequestError,
    VaultTimeout,
    VaultUnavailable,
)
from service.settings import Secret
from service.vault.async_client import AsyncVault
from service.vault.base import JSON
from service.vault.client import VaultClient

TIMEOUT_S = 0.5
GOOD = b'{"data": {"node": "second"}}'
PROBE = "probe"

# The first node's behaviour -> "fails over", or the error both clients must raise.
TWO_NODES: list[tuple[str, str | type[VaultError]]] = [
    ("500", "fails over"),
    ("501", "fails over"),
    ("502", "fails over"),
    ("503", "fails over"),
    ("504", "fails over"),
    ("reset", "fails over"),
    ("hang", "fails over"),
    ("refused", "fails over"),
    ("400", VaultRequestError),
    ("403", VaultPermissionDenied),
    ("404", VaultNotFound),
    ("418", VaultError),
    ("429", VaultUnavailable),
    ("garbage", VaultError),
]
# The same behaviours from the only node: what each becomes.
ONE_NODE: list[tuple[str, type[VaultError]]] = [
    ("500", VaultUnavailable),
    ("501", VaultError),
    ("502", VaultUnavailable),
    ("503", VaultUnavailable),
    ("504", VaultError),
    ("reset", VaultUnavailable),
    ("hang", VaultTimeout),
    ("refused", VaultUnavailable),
    ("400", VaultRequestError),
    ("403", VaultPermissionDenied),
    ("404", VaultNotFound),
    ("418", VaultError),
    ("429", VaultUnavailable),
    ("garbage", VaultError),
]


class Node:
    """A loopback HTTP server that answers token lookups as Vault does and every probe
    as ``behaviour`` says, counting the probes it received."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.probes: Counter[str] = Counter()
        node = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path.startswith("/v1/auth/token/lookup-self"):
                    self._send(200, b'{"data": {"ttl": 0, "renewable": false}}')
                    return
                node.probes[self.path] += 1
                if node.behaviour == "reset":
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif node.behaviour == "hang":
                    time.sleep(TIMEOUT_S * 4)
                elif node.behaviour == "garbage":
                    self._send(200, b"<html>proxy error page</html>", "text/html")
                elif node.behaviour == "good":
                    self._send(200, GOOD)
                else:
                    self._send(int(node.behaviour), b'{"errors": ["as the test says"]}')

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.addr = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def nodes() -> Iterator[dict[str, Node]]:
    made: dict[str, Node] = {}
    yield made
    for node in made.values():
        node.stop()


def addresses(nodes: dict[str, Node], first: str, *, second: bool) -> list[str]:
    if first == "refused":
        addrs = [f"http://127.0.0.1:{free_port()}"]  # nothing listens there
    else:
        nodes["first"] = Node(first)
        addrs = [nodes["first"].addr]
    if second:
        nodes["second"] = Node("good")
        addrs.append(nodes["second"].addr)
    return addrs


def blocking(addrs: list[str]) -> JSON | VaultError:
    client = VaultClient(addrs, Secret("t"), timeout=TIMEOUT_S)
    try:
        return client.write(PROBE, "probe", {"plaintext": "MTIzNA=="})
    except VaultError as exc:
        return exc
    finally:
        client.close()


async def on_the_loop(addrs: list[str]) -> JSON | VaultError:
    client = VaultClient(addrs, Secret("t"), timeout=TIMEOUT_S)
    with ThreadPoolExecutor(2) as executor:
        aio = AsyncVault(client, executor=executor)
        try:
            return await aio.write(PROBE, "probe", {"plaintext": "MTIzNA=="})
        except VaultError as exc:
            return exc
        finally:
            await aio.aclose()
            client.close()


def probes(nodes: dict[str, Node], name: str) -> int:
    return sum(nodes[name].probes.values()) if name in nodes else 0


@pytest.mark.parametrize(("first", "expected"), TWO_NODES)
@pytest.mark.anyio
async def test_both_clients_fail_over_alike(
    nodes: dict[str, Node], first: str, expected: str | type[VaultError]
) -> None:
    addrs = addresses(nodes, first, second=True)
    outcomes = {"blocking": blocking(addrs), "event loop": await on_the_loop(addrs)}
    for client, outcome in outcomes.items():
        if expected == "fails over":
            assert outcome == {"data": {"node": "second"}}, (client, outcome)
        else:
            assert type(outcome) is expected, (client, outcome)
            assert "MTIzNA" not in str(outcome)
    if first != "refused":
        assert probes(nodes, "first") == 2  # once by each client
    assert probes(nodes, "second") == (2 if expected == "fails over" else 0)


@pytest.mark.parametrize(("only", "expected"), ONE_NODE)
@pytest.mark.anyio
async def test_both_clients_make_the_same_error_of_the_last_node(
    nodes: dict[str, Node], only: str, expected: type[VaultError]
) -> None:
    addrs = addresses(nodes, only, second=False)
    outcomes = {"blocking": blocking(addrs), "event loop": await on_the_loop(addrs)}
    assert {client: type(outcome) for client, outcome in outcomes.items()} == {
        "blocking": expected,
        "event loop": expected,
    }
    assert all("MTIzNA" not in str(outcome) for outcome in outcomes.values())
