"""Coalesce concurrent single-item requests into batch calls, without adding latency when idle.

Sits between the asyncio webhook handlers and the blocking Transit client: many concurrent
``encrypt``/``decrypt``/``hmac`` calls become one ``batch_input`` call.

Policy ("send at once when nothing is in flight; while a batch is in flight, queue, and send the
queue as the next batch"):

* A ``submit`` that finds a free slot (fewer than ``max_in_flight`` batches in flight) starts a
  batch task at once. No timer, no sleep. The task takes its batch from the queue when it first
  runs, i.e. on the next event-loop iteration. That iteration is the cost of running the send in
  its own task anyway (it must be a task, so that cancelling one caller never cancels the batch),
  so items submitted in the same tick coalesce for free. An extra ``asyncio.sleep(0)`` would only
  add an iteration of latency to every idle request; under load the in-flight queue coalesces.
* Adaptive linger (``linger`` > 0): a batch task whose coalescer's previous batch carried more
  than one item (i.e. under load) waits up to ``linger`` seconds of loop time for company before
  it takes its batch, and leaves as soon as the queue is as long as the previous batch. After a
  batch of one item (an idle or lightly loaded service) nothing waits: idle requests pay no
  latency. See :func:`linger_delay`. In the same mode a further batch starts while another is
  in flight only once the queue is as long as the previous batch; smaller, it waits for the
  batch in flight (A/B in bench/RESULTS.md: fewer, larger Transit calls, more throughput).
* While every slot is busy, items queue; each finished batch sends the next ``max_batch`` queued
  items (FIFO). ``max_batch`` must be set safely below the server's per-call limit (Transit here:
  about 249 items with plaintext+context).
* One result per item, in order. A result that is an exception is raised to that item's caller
  only. If ``send_batch`` raises, every caller of that batch gets that exception; later batches
  are unaffected. A wrong number of results fails the whole batch with ``CoalescerError``.
* A cancelled caller leaves the queue if its item is not sent yet; if it was, its result is
  dropped. Callers never share a cancellation.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeAlias, TypeVar

from service.errors import CoalescerClosed, CoalescerError

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

BatchSender: TypeAlias = Callable[[Sequence[ItemT]], Awaitable[Sequence[ResultT | BaseException]]]
BatchObserver: TypeAlias = Callable[[int, float], None]  # (batch size, seconds in send_batch)

_log = logging.getLogger(__name__)


def linger_delay(previous_batch: int, queued: int, *, max_batch: int, bound: float) -> float:
    """Longest a batch about to leave waits for more items: ``bound`` while the previous
    batch carried more than one item and this one is still smaller, else none. (The wait
    also ends as soon as the queue is as long as the previous batch.)

    A batch of one says callers are not meeting: waiting would only add latency. A batch of
    several says they arrive faster than Transit answers: a short wait trades at most
    ``bound`` of latency for fewer, larger Transit calls. Once the batch is as large as the
    last one, waiting longer only adds latency (bench/RESULTS.md).
    """
    if bound <= 0 or previous_batch <= 1 or queued >= min(previous_batch, max_batch):
        return 0.0
    return bound


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Entry(Generic[ItemT, ResultT]):
    # A class, not a tuple: deque.remove() must match by identity, never by comparing items.
    __slots__ = ("future", "item")

    def __init__(self, item: ItemT, future: asyncio.Future[ResultT]) -> None:
        self.item = item
        self.future = future


class Coalescer(Generic[ItemT, ResultT]):
    def __init__(
        self,
        send_batch: BatchSender[ItemT, ResultT],
        *,
        max_batch: int,
        max_in_flight: int = 1,
        name: str = "",
        on_batch: BatchObserver | None = None,
        linger: float = 0.0,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be >= 1")
        if not 0 <= linger <= 0.001:
            raise ValueError("linger must be between 0 and 1 ms")
        self._send_batch = send_batch
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._name = name or "coalescer"
        self._on_batch = on_batch
        self._linger = linger
        self._previous_batch = 0  # size of the batch taken last
        self._wake: asyncio.Future[None] | None = None  # set while a batch task lingers
        self._wake_at = max_batch  # queue length that ends the linger
        self._queue: collections.deque[_Entry[ItemT, ResultT]] = collections.deque()
        self._in_flight = 0  # batch tasks started and not finished (slots in use)
        self._starter: asyncio.Task[None] | None = None  # batch task not yet run: still filling
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def submit(self, item: ItemT) -> ResultT:
        """Send ``item`` in the next possible batch; return its result or raise its exception."""
        if self._closed:
            raise CoalescerClosed(f"{self._name} is closed")
        entry: _Entry[ItemT, ResultT] = _Entry(item, asyncio.get_running_loop().create_future())
        self._queue.append(entry)
        if self._wake is not None and len(self._queue) >= self._wake_at:
            _wake(self._wake)  # as large as the last one, or full: no reason to wait on
        self._kick()
        try:
            return await entry.future
        except asyncio.CancelledError:
            # Not sent yet: leave the queue. Already sent: the batch task sees the future is
            # done (cancelled) and drops the result; the other callers are untouched.
            with contextlib.suppress(ValueError):
                self._queue.remove(entry)
            raise

    async def aclose(self) -> None:
        """Refuse new items, send everything queued, wait for every batch to finish."""
        self._closed = True
        while self._queue or self._tasks:
            self._kick()  # normally a no-op; guarantees progress if a batch task was cancelled
            await asyncio.wait(set(self._tasks))

    def _kick(self) -> None:
        # At most one batch task waits to start: everything queued until it runs is its batch.
        if self._starter is not None or self._in_flight >= self._max_in_flight or not self._queue:
            return
        if (
            self._linger
            and self._in_flight
            and len(self._queue) < min(self._previous_batch, self._max_batch)
        ):
            return  # another batch in flight: a second one only once as large as the last
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._run_batch(), name=f"{self._name}-batch")
        self._starter = task
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._starter is task:  # cancelled before its first step: the body never ran
            self._starter = None
            self._in_flight -= 1
        # Observe every outcome, so nothing is reported as "never retrieved".
        if not task.cancelled() and (exc := task.exception()) is not None:
            _log.error("%s: batch task failed: %r", self._name, exc)

    async def _run_batch(self) -> None:
        delay = linger_delay(
            self._previous_batch, len(self._queue), max_batch=self._max_batch, bound=self._linger
        )
        if delay:
            # Still the starter while lingering: what is submitted meanwhile joins this batch.
            await self._linger_for(delay)
        self._starter = None
        batch: list[_Entry[ItemT, ResultT]] = []
        while self._queue and len(batch) < self._max_batch:
            entry = self._queue.popleft()
            # Skip a caller cancelled in this same tick (its except-block has not run yet).
            if not entry.future.done():
                batch.append(entry)
        self._previous_batch = len(batch)
        self._kick()  # leftovers may use another free slot right away (max_in_flight > 1)
        try:
            if batch:
                await self._send(batch)
        finally:
            # Only reached with pending futures if this task was cancelled (loop shutdown):
            # never leave a caller waiting forever.
            for entry in batch:
                entry.future.cancel()
            self._in_flight -= 1
        self._kick()

    async def _linger_for(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._wake_at = min(self._previous_batch, self._max_batch)
        wake = self._wake = loop.create_future()
        # A timer and a future, not asyncio.sleep: a full queue ends the wait early.
        timer = loop.call_later(delay, _wake, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    async def _send(self, batch: list[_Entry[ItemT, ResultT]]) -> None:
        outcomes: Sequence[ResultT | BaseException]
        started = time.perf_counter()
        try:
            outcomes = await self._send_batch([entry.item for entry in batch])
        except Exception as exc:
            # Vault down mid-batch: every caller of this batch gets this exception (one shared
            # instance; Python 3.11 futures re-raise it with its own traceback each time).
            outcomes = [exc] * len(batch)
        else:
            if len(outcomes) != len(batch):
                error = CoalescerError(
                    f"{self._name}: send_batch returned {len(outcomes)} results "
                    f"for {len(batch)} items"
                )
                outcomes = [error] * len(batch)
        elapsed = time.perf_counter() - started

        for entry, outcome in zip(batch, outcomes, strict=True):
            if entry.future.done():  # the caller was cancelled after its item was sent
                continue
            if isinstance(outcome, BaseException):
                entry.future.set_exception(outcome)
            else:
                entry.future.set_result(outcome)

        if self._on_batch is not None:
            try:
                self._on_batch(len(batch), elapsed)
            except Exception:
                # A metrics bug must not break request handling.
                _log.exception("%s: on_batch callback failed", self._name)
