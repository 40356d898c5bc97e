"""A steady load of whole calls for the failure drills: a few callers, each placing full
signed calls in a loop through one URL, every answer checked. The calls follow the TwiML
(each ``<Gather action>`` and ``<Redirect>``, :class:`~service.devtools.caller.Caller`), one
entry typed per prompt, so a call flow with one more prompt needs one more entry in a
:class:`Dial`, nothing else. Each webhook request's latency is kept with the time it was
sent, and each call with its CallSid, so that a drill can read the figures of the moments
around the failure it caused and hold the store's records against what was placed."""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from service.devtools.caller import REGISTERED, Caller, new_call_sid
from tests.support.demo import ACCOUNT, FOUND

DEMO_CALLER = "+15005550006"


@dataclass(frozen=True)
class Dial:
    """One call to place: the entries typed, one per prompt, in order; the last sentence
    the caller must hear; the number it calls from; the account it is about (the drills
    group the store's records by it)."""

    entries: tuple[str, ...] = ("1234", "4321")
    expected: str = FOUND
    caller: str = DEMO_CALLER
    account: str = ACCOUNT
    identify: str = REGISTERED  # the account step: an account number, or star


@dataclass(frozen=True)
class Placed:
    call_sid: str
    dial: Dial
    at: float  # time.monotonic() when the call started
    failed: bool


@dataclass(frozen=True)
class Failure:
    at: float  # time.monotonic() when the call started
    heard: tuple[str, ...]
    error: str


@dataclass
class Figures:
    calls: int
    failed: int
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def __str__(self) -> str:
        return (
            f"{self.calls} calls ({self.requests} requests), {self.failed} failed, "
            f"p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, max {self.max_ms:.0f} ms"
        )


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


@dataclass
class CallLoad:
    """``callers`` threads placing calls through ``url`` until stopped: caller thread
    ``i``'s ``n``-th call is ``dials(i, n)`` (by default the demo account's call)."""

    url: str
    auth_token: str
    callers: int = 6
    dials: Callable[[int, int], Dial] = lambda i, n: Dial()
    placed: list[Placed] = field(default_factory=list)
    calls: list[float] = field(default_factory=list)  # start time of each call that ended
    failures: list[Failure] = field(default_factory=list)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (sent at, seconds)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> CallLoad:
        for i in range(self.callers):
            thread = threading.Thread(target=self._run, args=(i,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, index: int) -> None:
        def sent(request: httpx.Request) -> None:
            request.extensions["sent_at"] = time.monotonic()

        def answered(response: httpx.Response) -> None:
            started = response.request.extensions["sent_at"]
            with self._lock:
                self.latencies.append((started, time.monotonic() - started))

        # Twilio waits 15 s for an answer; so does this caller.
        with httpx.Client(
            timeout=15, event_hooks={"request": [sent], "response": [answered]}
        ) as client:
            for n in itertools.count():
                if self._stop.is_set():
                    break
                dial = self.dials(index, n)
                heard: list[str] = []
                started = time.monotonic()
                call_sid = new_call_sid()
                error = ""
                try:
                    Caller(
                        self.url,
                        self.auth_token,
                        client,
                        say=heard.append,
                        caller=dial.caller,
                        identify=dial.identify,
                    ).play(list(dial.entries), call_sid=call_sid)
                except httpx.HTTPError as exc:
                    error = type(exc).__name__
                failed = bool(error) or not heard or heard[-1] != dial.expected
                with self._lock:
                    self.calls.append(started)
                    self.placed.append(Placed(call_sid, dial, started, failed))
                    if failed:
                        self.failures.append(Failure(started, tuple(heard), error))

    def mark(self) -> float:
        return time.monotonic()

    def figures(self, since: float, until: float | None = None) -> Figures:
        """What happened to the calls started (and requests sent) within the window."""
        end = until if until is not None else time.monotonic()
        with self._lock:
            calls = [t for t in self.calls if since <= t <= end]
            failed = [f for f in self.failures if since <= f.at <= end]
            took = [s * 1000 for t, s in self.latencies if since <= t <= end]
        return Figures(
            len(calls),
            len(failed),
            len(took),
            statistics.median(took) if took else 0.0,
            percentile(took, 0.99),
            max(took, default=0.0),
        )
