"""The network-namespace harness (tests/support/netns.py) itself: hosts that reach each
other by their addresses and nothing beyond this machine, faults that are silence (a
connection times out) rather than refusals, and nothing left behind, even when a test
fails or a previous run crashed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.support import netns
from tests.support.netns import Host, Network

SERVE = (
    "import socket, sys\n"
    "s = socket.socket(); s.bind((sys.argv[1], 7070)); s.listen(8)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hello'); c.close()\n"
)
PROBE = (
    "import socket, sys, time\n"
    "t = time.monotonic()\n"
    "try:\n"
    "    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5)\n"
    "    print('ok', c.recv(5).decode())\n"
    "except OSError as e:\n"
    "    print(type(e).__name__, round(time.monotonic() - t, 2))\n"
)


def serve(host: Host) -> None:
    host.popen([sys.executable, "-c", SERVE, host.addr])
    deadline = time.monotonic() + 10
    while probe(host, host) != "ok hello":
        assert time.monotonic() < deadline, "the test server did not listen"
        time.sleep(0.05)


def probe(source: Host, target: Host | str, port: int = 7070) -> str:
    addr = target if isinstance(target, str) else target.addr
    return source.run([sys.executable, "-c", PROBE, addr, str(port)]).stdout.strip()


def test_hosts_reach_each_other_and_nothing_beyond() -> None:
    with Network() as net:
        a, b = net.host("a"), net.host("b")
        serve(a)
        assert probe(b, a) == "ok hello"
        # Its address, not loopback: nothing listens on b's own 127.0.0.1.
        assert probe(b, "127.0.0.1").startswith("ConnectionRefusedError")
        routes = subprocess.run(
            ["ip", "-n", b.ns, "route"], capture_output=True, text=True, check=True
        ).stdout
        assert "default" not in routes, routes
        # Off the machine: no route at all, an immediate error.
        outcome = probe(b, "192.0.2.1", 80)
        assert outcome.startswith("OSError") or "Unreachable" in outcome, outcome
        # The callers, in the root namespace, reach a host through the bridge.
        with socket.create_connection((a.addr, 7070), timeout=2) as caller:
            assert caller.recv(5) == b"hello"


def test_a_cut_is_silence_and_heals() -> None:
    with Network() as net:
        a, b, c = net.host("a"), net.host("b"), net.host("c")
        serve(a)
        net.cut(b, a)
        name, took = probe(b, a).split()
        assert name == "TimeoutError" and float(took) >= 1.4  # not refused: silence
        assert probe(c, a) == "ok hello"  # only b is cut
        net.heal()
        assert probe(b, a) == "ok hello"
        net.isolate(a)
        assert probe(c, a).startswith("TimeoutError")
        with pytest.raises(OSError):
            socket.create_connection((a.addr, 7070), timeout=1)
        net.heal()
        net.partition([a], [b])
        assert probe(b, a).startswith("TimeoutError") and probe(c, a) == "ok hello"


TIMED = (
    "import socket, sys, time\n"
    "t = time.monotonic()\n"
    "c = socket.create_connection((sys.argv[1], 7070), timeout=5)\n"
    "print(round(time.monotonic() - t, 3), c.recv(5).decode())\n"
)


def connect_s(source: Host, target: Host) -> float:
    """Seconds a TCP handshake from ``source`` to ``target`` takes (SYN, SYN-ACK)."""
    seconds, answer = source.run([sys.executable, "-c", TIMED, target.addr]).stdout.split()
    assert answer == "hello"
    return float(seconds)


def test_a_delay_holds_each_packet_both_ways_and_heals() -> None:
    """No netem here: the NFQUEUE delayer (tests/support/nfdelay.py). A handshake is one
    packet each way, so 100 ms each way is 200 ms; with loss on top the link still works;
    healed, the delayer is gone and the link is fast again."""
    with Network() as net:
        a, b, c = net.host("a"), net.host("b"), net.host("c")
        serve(a)
        assert connect_s(b, a) < 0.1
        net.delay(b, a, 0.1)
        assert all(connect_s(b, a) >= 0.2 for _ in range(3))
        assert connect_s(c, a) < 0.1  # only b's link to a
        net.sever(b, a, loss=0.05)
        assert connect_s(b, a) >= 0.2
        (delayer,) = (process for process, _ in net.delayers.values())
        net.heal()
        assert delayer.poll() is not None and not net.delayers
        assert connect_s(b, a) < 0.1


def test_nothing_is_left_even_when_the_test_fails() -> None:
    with pytest.raises(RuntimeError, match="a failing drill"), Network() as net:
        host = net.host("a")
        server = host.popen([sys.executable, "-c", SERVE, host.addr])
        raise RuntimeError("a failing drill")
    assert server.poll() is not None
    assert netns.leftovers() == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert netns.PREFIX not in links


def test_a_crashed_runs_leftovers_are_removed_at_the_next_start() -> None:
    crashed = f"{netns.PREFIX}-crashed"
    subprocess.run(["ip", "netns", "add", crashed], check=True)
    subprocess.run(
        [
            "ip",
            "link",
            "add",
            f"{netns.PREFIX}99",
            "type",
            "veth",
            "peer",
            "name",
            f"{netns.PREFIX}99i",
        ],
        check=True,
    )
    with Network() as net:
        assert crashed not in netns.leftovers()
        assert [h.name for h in net.hosts.values()] == []
    assert netns.leftovers() == []


def test_not_root_fails_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.fail.Exception) as failed:
        Network().__enter__()
    assert str(failed.value).count("\n") == 0
    assert "need root" in str(failed.value)


def test_a_second_network_waits_for_the_first() -> None:
    entered = threading.Event()

    def second() -> None:
        with Network():
            entered.set()

    with Network() as first:
        first.host("a")
        waiting = threading.Thread(target=second)
        waiting.start()
        assert not entered.wait(1.0)  # not sweeping the first one's hosts away
        assert [h.rsplit("-", 1)[-1] for h in netns.leftovers()] == ["a"]
    waiting.join(timeout=30)
    assert entered.is_set()
