"""Several hosts on one machine, for the silent-fault drills: each host a network namespace
with its own address, joined to one bridge by a veth pair, and the faults a real network
has between them, made with iptables inside the hosts (a dropped packet is silence, not a
refusal: what a partition looks like to TCP).

::

    this machine (root namespace)
      ivr-nxbr  10.225.0.1/24   the bridge; no forwarding, no NAT
        ├── veth ── host "pg"        10.225.0.10/24
        ├── veth ── host "backend-1" 10.225.0.11/24
        └── …

- **Wiring.** A host has its loopback, its veth with one address on 10.225.0.0/24 and the
  subnet's on-link route, nothing else: no default route, so nothing leaves this machine
  (a connection elsewhere fails at once, "network is unreachable"). Hosts reach each other
  by those addresses only. The test process, in the root namespace, reaches them through
  the bridge's address (as Twilio reaches the proxy).
- **Clean-up.** Everything is named ``ivr-nx…``. :class:`Network` removes it on exit, even
  when the test fails, after killing every process it started; it also removes what a
  crashed run left before it builds anything. One network at a time on this machine (a
  lock file, :data:`LOCK`): a second test run waits rather than sweeping the first's
  hosts away; a run that crashed released it with its process.
- **Root.** Namespaces, links and iptables need root; CI runs as root. Otherwise the test
  fails with one line saying so.
- **Delay.** This kernel has no ``netem`` qdisc (``tc qdisc add … netem`` answers "qdisc kind
  is unknown"; ``modprobe sch_netem``: no modules at all), so a link loses packets with
  iptables' ``statistic`` match, and is delayed by iptables' ``NFQUEUE`` target and a
  process in the host that holds each packet (tests/support/nfdelay.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from tests.support.tools import require

PREFIX = "ivr-nx"
BRIDGE = f"{PREFIX}br"
SUBNET = "10.225.0"
GATEWAY = f"{SUBNET}.1"  # the bridge: the root namespace's side
FIRST_HOST = 10
IPTABLES = "iptables-legacy"  # the kernel's x_tables; the nf_tables variant may be absent
LOCK = Path("/run/lock/ivr-nx.lock")
QUEUE = 7  # the NFQUEUE number delayed packets go to (each host has its own queues)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def require_root() -> None:
    """The test fails here, in one line, unless it runs as root with the tools."""
    if os.geteuid() != 0:
        pytest.fail(
            "the network-namespace drills need root (ip netns, veth pairs, "
            "iptables): run them as root, as CI does",
            pytrace=False,
        )
    require("ip")
    require(IPTABLES)


def leftovers() -> list[str]:
    """This harness's namespaces that exist now."""
    listed = _ip("netns", "list").stdout.split()
    return [name for name in listed if name.startswith(PREFIX)]


def sweep() -> None:
    """Remove every namespace and link of this harness (a crashed run's, or ours)."""
    for name in leftovers():
        for pid in _ip("netns", "pids", name, check=False).stdout.split():
            _kill(int(pid))
        _ip("netns", "del", name, check=False)
    links = _ip("-o", "link", "show").stdout.splitlines()
    for line in links:
        name = line.split(":", 2)[1].strip().split("@")[0]
        if name.startswith(PREFIX):
            _ip("link", "del", name, check=False)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class Host:
    name: str
    ns: str
    addr: str
    _network: Network

    def argv(self, command: Sequence[str]) -> list[str]:
        """``command`` run inside this host."""
        return ["ip", "netns", "exec", self.ns, *command]

    def popen(self, command: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """A process in this host, killed when the network is taken down."""
        process: subprocess.Popen[Any] = subprocess.Popen(self.argv(command), **kwargs)
        self._network.processes.append(process)
        return process

    def run(self, command: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(command), capture_output=True, text=True, timeout=60, check=False, **kwargs
        )

    def iptables(self, *rule: str) -> None:
        done = self.run([IPTABLES, "-w", *rule])
        if done.returncode != 0:
            raise RuntimeError(f"{self.name}: iptables {' '.join(rule)}: {done.stderr.strip()}")


@dataclass
class Network:
    """A bridge and the hosts on it; a context manager that builds nothing until
    :meth:`host` is called and removes everything on exit."""

    hosts: dict[str, Host] = field(default_factory=dict)
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)
    delayers: dict[str, tuple[subprocess.Popen[str], float]] = field(default_factory=dict)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(FIRST_HOST))
    _lock: IO[bytes] | None = None

    def __enter__(self) -> Network:
        require_root()
        self._lock = LOCK.open("ab")
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # released by close(), or by dying
        try:
            sweep()
            _ip("link", "add", BRIDGE, "type", "bridge")
            _ip("addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
            _ip("link", "set", BRIDGE, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
        sweep()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def host(self, name: str) -> Host:
        number = next(self._numbers)
        ns = f"{PREFIX}-{name}"
        outside, inside = f"{PREFIX}{number}", f"{PREFIX}{number}i"
        _ip("netns", "add", ns)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", outside, "master", BRIDGE, "up")
        _ip("link", "set", inside, "netns", ns)
        addr = f"{SUBNET}.{number}"
        _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", inside)
        _ip("-n", ns, "link", "set", inside, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        host = Host(name, ns, addr, self)
        self.hosts[name] = host
        return host

    # -- faults: rules in the hosts' own OUTPUT chains, all removed by heal() -------------

    def cut(self, source: Host, target: Host, *, loss: float = 1.0) -> None:
        """``source``'s packets to ``target`` are dropped (with ``loss`` < 1: that share
        of them, at random). One way only: TCP in either direction then fails anyway
        (a handshake needs both), but what ``target`` sends reaches ``source``."""
        rule = ["-A", "OUTPUT", "-d", target.addr]
        if loss < 1.0:
            rule += ["-m", "statistic", "--mode", "random", "--probability", f"{loss:.4f}"]
        source.iptables(*rule, "-j", "DROP")

    def sever(self, a: Host, b: Host, *, loss: float = 1.0) -> None:
        """Both ways between ``a`` and ``b``."""
        self.cut(a, b, loss=loss)
        self.cut(b, a, loss=loss)

    def partition(self, side: Iterable[Host], other: Iterable[Host] | None = None) -> None:
        """No packet between ``side`` and ``other`` (default: every other host), either
        way; the root namespace (the callers) still reaches both."""
        inside = list(side)
        outside = (
            list(other)
            if other is not None
            else [h for h in self.hosts.values() if h not in inside]
        )
        for a in inside:
            for b in outside:
                self.sever(a, b)

    def isolate(self, host: Host) -> None:
        """``host`` cut from everything, the callers in the root namespace too."""
        host.iptables("-A", "OUTPUT", "-d", f"{SUBNET}.0/24", "-j", "DROP")
        host.iptables("-A", "INPUT", "-s", f"{SUBNET}.0/24", "-j", "DROP")

    def delay(self, host: Host, other: Host, seconds: float) -> None:
        """Every packet between ``host`` and ``other``, either way, held ``seconds`` in
        ``host`` (a delaying process there, nfdelay.py; one delay per host)."""
        if host.name not in self.delayers:
            delayer = host.popen(
                [
                    sys.executable,
                    str(Path(__file__).with_name("nfdelay.py")),
                    str(QUEUE),
                    str(seconds),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert delayer.stdout is not None
            if delayer.stdout.readline().strip() != "bound":
                raise RuntimeError(f"{host.name}: the delaying process did not start")
            self.delayers[host.name] = (delayer, seconds)
        assert self.delayers[host.name][1] == seconds, "one delay per host"
        host.iptables("-A", "OUTPUT", "-d", other.addr, "-j", "NFQUEUE", "--queue-num", str(QUEUE))
        host.iptables("-A", "INPUT", "-s", other.addr, "-j", "NFQUEUE", "--queue-num", str(QUEUE))

    def heal(self) -> None:
        for host in self.hosts.values():
            host.iptables("-F", "OUTPUT")
            host.iptables("-F", "INPUT")
        # The packets still held go on after their delay; a delayer stopped before would
        # take them with it (the kernel drops what a closed queue holds).
        if self.delayers:
            time.sleep(max(seconds for _, seconds in self.delayers.values()) + 0.1)
        for delayer, _ in self.delayers.values():
            delayer.terminate()
            delayer.wait(timeout=10)
        self.delayers.clear()
