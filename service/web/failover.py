"""Several addresses for one dependency (``VAULT_ADDR``, ``BACKEND_URL``): which to try, in
which order, for one request.

Client-side failover, chosen over a load balancer in front of the backends by measurement
(bench/RESULTS.md, "Past one machine"): the webhook already holds keep-alive connections
to each backend, so a proxy hop would add its own latency and CPU to every lookup, and a
proxy retries a POST only when it could not connect, while a lookup is safe to send again
(its ``Idempotency-Key`` makes a second backend answer what the first decided).

The rules, the same for every client that uses them (the webhook's backend calls, the
Transit hot path, hvac's login and renewal):

- an address that failed (refused, reset, timed out, a 5xx or sealed answer) is tried last
  for ``cooldown`` seconds, so that requests do not keep knocking on a dead replica; a
  request still tries it when every other address failed too;
- ``spread=True`` (backends): each request starts at the next address in turn, so that
  replicas share the load; ``spread=False`` (Vault): requests stay on the address that
  last worked, since a standby only forwards to the active node (one hop more).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence

import structlog

log = structlog.get_logger("ivr.failover")

COOLDOWN_S = 2.0


class Endpoints:
    """Thread-safe: hvac's client calls it from a thread pool, the event loop's from the
    loop; every method holds the lock for a few dictionary operations only."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        name: str,
        spread: bool,
        cooldown: float = COOLDOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not addresses:
            raise ValueError("no address")
        self.addresses = tuple(addresses)
        self.name = name  # for log lines: "vault", "backend"
        self.spread = spread
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._current = 0  # spread=False: the address that last worked
        self._failed_at: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.addresses)

    @property
    def current(self) -> str:
        """The address a request would try first now (without taking a turn)."""
        return self.addresses[self._current]

    def order(self) -> list[str]:
        """Every address once, in the order one request should try them."""
        if len(self.addresses) == 1:
            return [self.addresses[0]]
        with self._lock:
            start = (next(self._turn) if self.spread else self._current) % len(self.addresses)
            ring = [(start + i) % len(self.addresses) for i in range(len(self.addresses))]
            now = self._clock()
            cooling = {i: at for i, at in self._failed_at.items() if now - at < self.cooldown}
            ready = [i for i in ring if i not in cooling]
            # Those cooling down last, the longest-failed first: it is the likeliest back.
            later = sorted(cooling, key=lambda i: cooling[i])
        return [self.addresses[i] for i in ready + later]

    def failed(self, address: str) -> None:
        index = self.addresses.index(address)
        with self._lock:
            fresh = index not in self._failed_at
            self._failed_at[index] = self._clock()
        if fresh and len(self.addresses) > 1:
            log.warning("address failed; trying the others", dependency=self.name, address=address)

    def worked(self, address: str) -> None:
        if not self._failed_at and (self.spread or self.addresses[self._current] == address):
            return  # nothing to change: the hot path takes no lock
        index = self.addresses.index(address)
        with self._lock:
            self._current = index
            came_back = self._failed_at.pop(index, None) is not None
        if came_back:
            log.info("address answers again", dependency=self.name, address=address)
