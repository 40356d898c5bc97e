"""Unit tests of the coalescer's concurrency logic, with a fake batch sender (no Vault here:
this is pure scheduling; the Transit client's own tests run against a real dev Vault).

Async tests run on anyio's pytest plugin, each on a fresh asyncio loop. A scheduling bug
fails fast (the module's 30 s timeout) instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import CoalescerClosed, CoalescerError
from service.vault.coalescer import Coalescer, linger_delay

T = TypeVar("T")


pytestmark = pytest.mark.timeout(30)


async def spin(n: int = 5) -> None:
    """Let the loop run ``n`` iterations (deterministic, no wall clock)."""
    for _ in range(n):
        await asyncio.sleep(0)


class FakeSender:
    """Records batches; optionally holds every batch until ``release`` is set."""

    def __init__(self, *, hold: bool = False, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.completed = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.delay = delay

    def result(self, item: int) -> str | BaseException:
        return f"r{item}"

    async def __call__(self, items: Sequence[int]) -> Sequence[str | BaseException]:
        self.batches.append(list(items))
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await self.release.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            out = [self.result(i) for i in items]
        finally:
            self.in_flight -= 1
        self.completed += 1
        return out

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]


@pytest.mark.anyio
async def test_idle_submit_goes_out_at_once_alone() -> None:
    sender = FakeSender()
    c: Coalescer[int, str] = Coalescer(sender, max_batch=64)
    task = asyncio.create_task(c.submit(1))
    # Iteration 1: submit runs and starts the batch task. Iteration 2: the batch task calls
    # send_batch. No timer, no waiting for company.
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert sender.batches == [[1]]
    assert await task == "r1"
    # Sequential idle submits never wait for each other.
    assert [await c.submit(i) for i in (2, 3)] == ["r2", "r3"]
    assert sender.sizes == [1, 1, 1]
    await c.aclose()


@pytest.mark.anyio
async def test_same_tick_submits_coalesce_into_one_batch() -> None:
    sender = FakeSender()
    c: Coalescer[int, str] = Coalescer(sender, max_batch=64)
    assert await asyncio.gather(*(c.submit(i) for i in range(10))) == [f"r{i}" for i in range(10)]
    assert sender.sizes == [10]
    await c.aclose()


@pytest.mark.anyio
async def test_submits_while_in_flight_become_the_next_batch() -> None:
    sender = FakeSender(hold=True)
    c: Coalescer[int, str] = Coalescer(sender, max_batch=64)
    first = asyncio.create_task(c.submit(0))
    await spin()
    assert sender.sizes == [1]
    rest = [asyncio.create_task(c.submit(i)) for i in range(1, 21)]
    await spin()
    assert sender.sizes == [1]  # nothing else goes out while the slot is busy
    assert sender.in_flight == 1
    assert not any(t.done() for t in rest)  # all 20 wait in the queue
    sender.release.set()
    assert await first == "r0"
    assert await asyncio.gather(*rest) == [f"r{i}" for i in range(1, 21)]
    assert sender.sizes == [1, 20]
    assert sender.batches[1] == list(range(1, 21))
    await c.aclose()


@pytest.mark.anyio
async def test_max_batch_cap_and_fifo_over_1000_items() -> None:
    sender = FakeSender(delay=0.001)
    c: Coalescer[int, str] = Coalescer(sender, max_batch=64)
    results = await asyncio.gather(*(c.submit(i) for i in range(1000)))
    assert results == [f"r{i}" for i in range(1000)]
    assert max(sender.sizes) <= 64
    assert max(sender.sizes) == 64
    assert sum(sender.sizes) == 1000
    # Items go out in submission order, each exactly once.
    assert [i for b in sender.batches for i in b] == list(range(1000))
    await c.aclose()


@pytest.mark.anyio
async def test_max_in_flight_allows_parallel_batches() -> None:
    sender = FakeSender(hold=True)
    c: Coalescer[int, str] = Coalescer(sender, max_batch=8, max_in_flight=2)
    a = asyncio.create_task(c.submit(0))
    await spin()
    b = asyncio.create_task(c.submit(1))
    await spin()
    rest = [asyncio.create_task(c.submit(i)) for i in range(2, 12)]
    await spin()
    assert sender.batches == [[0], [1]]  # two slots busy, the rest queued
    assert sender.in_flight == 2 and not any(t.done() for t in rest)
    sender.release.set()
    assert await asyncio.gather(a, b, *rest) == [f"r{i}" for i in range(12)]
    assert sender.peak_in_flight == 2
    assert max(sender.sizes) <= 8
    assert [i for batch in sender.batches for i in batch] == list(range(12))
    await c.aclose()


@pytest.mark.anyio
async def test_leftovers_beyond_max_batch_use_a_free_slot_at_once() -> None:
    sender = FakeSender(hold=True)
    c: Coalescer[int, str] = Coalescer(sender, max_batch=4, max_in_flight=2)
    tasks = [asyncio.create_task(c.submit(i)) for i in range(10)]
    await spin()
    assert sender.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert not any(t.done() for t in tasks[8:])  # 8 and 9 wait in the queue
    sender.release.set()
    assert await asyncio.gather(*tasks) == [f"r{i}" for i in range(10)]
    assert sender.sizes == [4, 4, 2]
    await c.aclose()


@pytest.mark.anyio
async def test_results_map_to_the_right_callers() -> None:
    async def send(items: Sequence[str]) -> list[str]:
        await asyncio.sleep(0)
        return [s.upper() for s in items]

    c: Coalescer[str, str] = Coalescer(send, max_batch=3)
    words = [f"word{i}" for i in range(17)]
    assert await asyncio.gather(*(c.submit(w) for w in words)) == [w.upper() for w in words]
    await c.aclose()


@pytest.mark.anyio
async def test_per_item_failure_reaches_only_its_caller() -> None:
    class Bad(Exception):
        pass

    class OddFails(FakeSender):
        def result(self, item: int) -> str | BaseException:
            return Bad(item) if item % 2 else f"r{item}"

    c: Coalescer[int, str] = Coalescer(OddFails(), max_batch=4)
    outcomes = await asyncio.gather(*(c.submit(i) for i in range(10)), return_exceptions=True)
    for i, outcome in enumerate(outcomes):
        if i % 2:
            assert isinstance(outcome, Bad)
            assert outcome.args == (i,)
        else:
            assert outcome == f"r{i}"
    await c.aclose()


@pytest.mark.anyio
async def test_send_batch_raising_fails_only_that_batch() -> None:
    """Vault goes down mid-stream: the batch in the air fails, the next ones succeed."""

    calls = 0
    release = asyncio.Event()

    async def send(items: Sequence[int]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await release.wait()
        if calls == 2:
            raise ConnectionError("vault unreachable")
        return [f"r{i}" for i in items]

    c: Coalescer[int, str] = Coalescer(send, max_batch=64)
    first = asyncio.create_task(c.submit(0))
    await spin()
    doomed = [asyncio.create_task(c.submit(i)) for i in (1, 2, 3)]
    await spin()
    release.set()
    assert await first == "r0"
    outcomes = await asyncio.gather(*doomed, return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    assert str(outcomes[0]) == "vault unreachable"
    # Each caller really gets it raised, and the coalescer keeps working afterwards.
    with pytest.raises(ConnectionError):
        await doomed[1]
    assert list(await asyncio.gather(c.submit(4), c.submit(5))) == ["r4", "r5"]
    assert calls == 3  # one batch failed, the one before and the one after did not
    await c.aclose()


@pytest.mark.anyio
async def test_wrong_result_count_fails_the_batch_with_coalescer_error() -> None:
    broken = True

    async def send(items: Sequence[int]) -> list[str]:
        out = [f"r{i}" for i in items]
        return out[:-1] if broken else out

    c: Coalescer[int, str] = Coalescer(send, max_batch=64, name="transit-encrypt")
    outcomes = await asyncio.gather(*(c.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(o, CoalescerError) for o in outcomes)
    assert "transit-encrypt" in str(outcomes[0])
    assert "2 results for 3 items" in str(outcomes[0])
    broken = False
    assert await c.submit(9) == "r9"
    await c.aclose()


@pytest.mark.anyio
async def test_caller_cancelled_before_send_leaves_the_queue() -> None:
    sender = FakeSender(hold=True)
    c: Coalescer[int, str] = Coalescer(sender, max_batch=64)
    first = asyncio.create_task(c.submit(0))
    await spin()
    impatient = asyncio.create_task(asyncio.wait_for(c.submit(1), timeout=0.01))
    patient = asyncio.create_task(c.submit(2))
    await spin()
    with pytest.raises(TimeoutError):
        await impatient  # the held batch cannot finish before the timeout
    sender.release.set()
    assert await first == "r0"
    assert await patient == "r2"
    assert sender.batches == [[0], [2]]  # item 1 was never sent
    await c.aclose()


@pytest.mark.anyio
async def test_caller_cancelled_after_send_does_not_disturb_the_batch() -> None:
    sender = FakeSender(hold=True)
    c: Coalescer[int, str] = Coalescer(sender, max_batch=64)
    gone = asyncio.create_task(c.submit(0))
    stays = asyncio.create_task(c.submit(1))
    await spin()
    assert sender.batches == [[0, 1]]
    gone.cancel()
    await spin()
    assert gone.cancelled()
    assert sender.in_flight == 1  # the batch itself was not cancelled
    sender.release.set()
    assert await stays == "r1"
    assert sender.completed == 1
    assert await c.submit(2) == "r2"
    await c.aclose()


@pytest.mark.anyio
async def test_aclose_flushes_queue_then_refuses_submits() -> None:
    before = asyncio.all_tasks()  # the test runner's own, running this test
    sender = FakeSender(hold=True)
    c: Coalescer[int, str] = Coalescer(sender, max_batch=2)
    tasks = [asyncio.create_task(c.submit(0))]
    await spin()
    tasks += [asyncio.create_task(c.submit(i)) for i in range(1, 6)]
    await spin()
    closing = asyncio.create_task(c.aclose())
    await spin()
    assert not closing.done()  # waits for the held batch and the queue
    with pytest.raises(CoalescerClosed):
        await c.submit(99)
    sender.release.set()
    await closing
    assert all(t.done() for t in tasks)
    assert [t.result() for t in tasks] == [f"r{i}" for i in range(6)]
    assert sender.sizes == [1, 2, 2, 1]
    assert sender.in_flight == 0
    # Every background task is finished: nothing left to be destroyed while pending.
    assert asyncio.all_tasks() == before
    with pytest.raises(CoalescerClosed):
        await c.submit(100)
    await c.aclose()  # idempotent


@pytest.mark.anyio
async def test_on_batch_hook_and_a_broken_hook_is_harmless(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[tuple[int, float]] = []

    with caplog.at_level(logging.ERROR, logger="service.vault.coalescer"):
        c: Coalescer[int, str] = Coalescer(
            FakeSender(), max_batch=4, on_batch=lambda n, s: seen.append((n, s))
        )
        await asyncio.gather(*(c.submit(i) for i in range(6)))
        await c.aclose()

        def broken(n: int, s: float) -> None:
            raise RuntimeError("metrics bug")

        c2: Coalescer[int, str] = Coalescer(FakeSender(), max_batch=4, on_batch=broken)
        assert await c2.submit(1) == "r1"
        await c2.aclose()
    assert [n for n, _ in seen] == [4, 2]
    assert all(s >= 0 for _, s in seen)
    assert "on_batch callback failed" in caplog.text


def test_loop_shutdown_with_pending_callers_is_clean(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        c: Coalescer[int, str] = Coalescer(FakeSender(hold=True), max_batch=4)
        for i in range(6):
            asyncio.create_task(c.submit(i))  # noqa: RUF006 -- abandoned on purpose
        await spin()
        # Returning now makes asyncio.run cancel the callers and the held batch task.

    # Not the anyio plugin: the loop's own shutdown is what this test is about.
    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    assert "destroyed but it is pending" not in caplog.text
    assert "never retrieved" not in caplog.text


def test_invalid_limits() -> None:
    async def send(items: Sequence[int]) -> list[int]:
        return list(items)

    with pytest.raises(ValueError):
        Coalescer(send, max_batch=0)
    with pytest.raises(ValueError):
        Coalescer(send, max_batch=1, max_in_flight=0)


@pytest.mark.anyio
async def test_throughput_sanity_counts_batches_not_time() -> None:
    """500 concurrent callers against a 10 ms batch call need a handful of calls, not 500."""

    sender = FakeSender(delay=0.010)
    c: Coalescer[int, str] = Coalescer(sender, max_batch=64)
    await asyncio.gather(*(c.submit(i) for i in range(500)))
    assert len(sender.batches) == 8  # ceil(500 / 64), whatever the machine's speed
    assert sum(sender.sizes) == 500

    # Callers trickling in one per loop iteration still share batches: the first goes
    # alone, the rest pile up behind it. Generous bound: only counts, no clock.
    sender2 = FakeSender(delay=0.010)
    c2: Coalescer[int, str] = Coalescer(sender2, max_batch=64)
    tasks = []
    for i in range(500):
        tasks.append(asyncio.create_task(c2.submit(i)))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert sender2.sizes[0] == 1
    assert len(sender2.batches) <= 500 // 10
    await c.aclose()
    await c2.aclose()


class ItemFailed(Exception):
    pass


class BatchFailed(Exception):
    pass


Plan = tuple[int, list[bool], list[int], list[int | None], list[int], list[bool]]


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    """n callers and what happens to each. Drawn before the test's event loop starts: a
    draw inside the coroutine would stop an example from within anyio's runner task."""
    n = draw(st.integers(min_value=1, max_value=60), label="n")
    item_fails = draw(st.lists(st.booleans(), min_size=n, max_size=n), label="item_fails")
    arrival = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n), label="arrival")
    cancel_after = draw(
        st.lists(st.none() | st.integers(0, 6), min_size=n, max_size=n), label="cancel_after"
    )
    # Per batch call, in call order: loop iterations to take, and whether the call raises.
    delays = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n), label="delays")
    batch_raises = draw(st.lists(st.booleans(), min_size=n, max_size=n), label="raises")
    return n, item_fails, arrival, cancel_after, delays, batch_raises


@pytest.mark.anyio
@settings(max_examples=200, deadline=None)
@given(
    plan=plans(),
    max_batch=st.integers(min_value=1, max_value=10),
    max_in_flight=st.integers(min_value=1, max_value=3),
)
async def test_property_every_caller_gets_its_own_outcome(
    plan: Plan, max_batch: int, max_in_flight: int
) -> None:
    n, item_fails, arrival, cancel_after, delays, batch_raises = plan
    before = asyncio.all_tasks()  # the test runner's own, running this example
    sent: list[int] = []
    submitted: list[int] = []
    calls = 0

    async def send(items: Sequence[int]) -> list[str | BaseException]:
        nonlocal calls
        call, calls = calls, calls + 1
        assert 1 <= len(items) <= max_batch
        sent.extend(items)
        await spin(delays[call])
        if batch_raises[call]:
            raise BatchFailed(*items)
        return [ItemFailed(i) if item_fails[i] else f"r{i}" for i in items]

    c: Coalescer[int, str] = Coalescer(send, max_batch=max_batch, max_in_flight=max_in_flight)

    async def caller(i: int) -> str:
        await spin(arrival[i])
        submitted.append(i)
        return await c.submit(i)

    tasks = [asyncio.create_task(caller(i)) for i in range(n)]
    for step in range(7):
        for i, t in enumerate(tasks):
            if cancel_after[i] == step:
                t.cancel()
        await asyncio.sleep(0)
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    await c.aclose()
    assert asyncio.all_tasks() == before

    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, asyncio.CancelledError):
            assert cancel_after[i] is not None
            continue
        assert i in sent
        if isinstance(outcome, BatchFailed):
            assert i in outcome.args  # the failure of the batch that carried i
        elif item_fails[i]:
            assert isinstance(outcome, ItemFailed)
            assert outcome.args == (i,)
        else:
            assert outcome == f"r{i}"
    # FIFO, no duplicates: what was sent is the submission order minus callers that
    # left the queue before their turn.
    assert len(sent) == len(set(sent))
    it = iter(submitted)
    assert all(any(s == x for x in it) for s in sent)


# -- adaptive linger, on a virtual clock -------------------------------------------------


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when it would otherwise wait: a timer due in
    1 ms fires after exactly 1 ms of loop time, at once in wall time, every run alike."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        real_select = self._selector.select  # type: ignore[attr-defined]

        def select(timeout: float | None = None) -> list[tuple[object, int]]:
            if timeout is not None and timeout > 0:
                self.now += timeout  # jump to the next timer instead of sleeping
            return real_select(0)  # type: ignore[no-any-return]

        self._selector.select = select  # type: ignore[attr-defined]

    def time(self) -> float:
        return self.now


def run_virtual(main: Callable[[VirtualClockLoop], Awaitable[T]]) -> T:
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.close()


class TimedSender(FakeSender):
    """Records the loop time at which each batch left."""

    def __init__(self, loop: VirtualClockLoop, **kwargs: bool) -> None:
        super().__init__(**kwargs)
        self.loop = loop
        self.sent_at: list[float] = []

    async def __call__(self, items: Sequence[int]) -> Sequence[str | BaseException]:
        self.sent_at.append(self.loop.time())
        return await super().__call__(items)


BOUND = 0.001


def test_linger_policy() -> None:
    assert linger_delay(0, 0, max_batch=8, bound=BOUND) == 0  # first batch: idle
    assert linger_delay(1, 3, max_batch=8, bound=BOUND) == 0  # last batch alone: idle
    assert linger_delay(4, 1, max_batch=8, bound=BOUND) == BOUND  # busy: wait
    assert linger_delay(4, 4, max_batch=8, bound=BOUND) == 0  # as large as the last: go
    assert linger_delay(20, 8, max_batch=8, bound=BOUND) == 0  # already full: go
    assert linger_delay(5, 1, max_batch=8, bound=0) == 0  # switched off
    with pytest.raises(ValueError):
        Coalescer(FakeSender(), max_batch=8, linger=0.002)  # the bound is at most 1 ms


def test_idle_service_never_lingers() -> None:
    async def main(loop: VirtualClockLoop) -> None:
        sender = TimedSender(loop)
        c: Coalescer[int, str] = Coalescer(sender, max_batch=8, linger=BOUND)
        for i in range(3):  # one at a time, far apart: every batch carries one item
            assert await c.submit(i) == f"r{i}"
            await asyncio.sleep(0.5)
        assert sender.sizes == [1, 1, 1]
        assert sender.sent_at == [0.0, 0.5, 1.0]  # not a microsecond of waiting
        await c.aclose()

    run_virtual(main)


def test_busy_service_lingers_up_to_the_bound_and_gathers_late_arrivals() -> None:
    async def main(loop: VirtualClockLoop) -> None:
        sender = TimedSender(loop)
        c: Coalescer[int, str] = Coalescer(sender, max_batch=8, linger=BOUND)
        await asyncio.gather(*(c.submit(i) for i in range(-4, 0)))  # busy: a batch of 4
        start = loop.time()
        first = asyncio.create_task(c.submit(0))
        await asyncio.sleep(0.0004)  # arrives while the batch lingers: joins it
        second = asyncio.create_task(c.submit(1))
        assert list(await asyncio.gather(first, second)) == ["r0", "r1"]
        assert sender.batches[1] == [0, 1]
        # Fewer than last time: it waited the whole bound, and not a moment longer.
        assert sender.sent_at[1] - start == pytest.approx(BOUND)
        await c.aclose()

    run_virtual(main)


def test_linger_ends_when_the_batch_is_as_large_as_the_last() -> None:
    async def main(loop: VirtualClockLoop) -> None:
        sender = TimedSender(loop)
        c: Coalescer[int, str] = Coalescer(sender, max_batch=8, linger=BOUND)
        await asyncio.gather(*(c.submit(i) for i in range(-3, 0)))  # a batch of 3
        start = loop.time()
        tasks = [asyncio.create_task(c.submit(0))]
        await asyncio.sleep(0.0001)
        tasks.append(asyncio.create_task(c.submit(1)))
        await asyncio.sleep(0.0002)
        tasks.append(asyncio.create_task(c.submit(2)))  # the third: as large as the last
        await asyncio.gather(*tasks)
        assert sender.batches[1] == [0, 1, 2]
        assert sender.sent_at[1] - start == pytest.approx(0.0003)
        await c.aclose()

    run_virtual(main)


def test_linger_bound_holds_while_items_keep_arriving() -> None:
    async def main(loop: VirtualClockLoop) -> None:
        sender = TimedSender(loop, hold=True)
        c: Coalescer[int, str] = Coalescer(sender, max_batch=64, linger=BOUND)
        busy = [asyncio.create_task(c.submit(i)) for i in range(-40, 0)]
        await asyncio.sleep(0)
        sender.release.set()
        await asyncio.gather(*busy)  # the previous batch carried 40 items
        start = loop.time()
        tasks = []
        for i in range(30):  # one item every 0.1 ms for 3 ms: never 40 at once
            tasks.append(asyncio.create_task(c.submit(i)))
            await asyncio.sleep(0.0001)
        await asyncio.gather(*tasks)
        sent = [start, *sender.sent_at[1:]]
        # The first batch task waited exactly the bound; no batch ever left later than the
        # bound after the one before it came back (the sender answers at once).
        assert sent[1] - start == pytest.approx(BOUND)
        assert all(b - a <= BOUND + 1e-9 for a, b in itertools.pairwise(sent))
        assert 2 <= len(sender.batches) - 1 <= 5  # 30 items in a few batches, not 30
        await c.aclose()

    run_virtual(main)


def test_a_full_batch_stops_lingering_at_once() -> None:
    async def main(loop: VirtualClockLoop) -> None:
        sender = TimedSender(loop)
        c: Coalescer[int, str] = Coalescer(sender, max_batch=4, linger=BOUND)
        await asyncio.gather(*(c.submit(i) for i in range(-4, 0)))  # one of 4: busy
        start = loop.time()
        first = asyncio.create_task(c.submit(0))
        await asyncio.sleep(0.0002)
        rest = [asyncio.create_task(c.submit(i)) for i in (1, 2, 3)]  # now 4: full
        await asyncio.gather(first, *rest)
        assert sender.batches[-1] == [0, 1, 2, 3]
        assert sender.sent_at[-1] - start == pytest.approx(0.0002)
        await c.aclose()

    run_virtual(main)


def test_a_caller_cancelled_while_its_batch_lingers_leaves_alone() -> None:
    async def main(loop: VirtualClockLoop) -> None:
        sender = TimedSender(loop)
        c: Coalescer[int, str] = Coalescer(sender, max_batch=8, linger=BOUND)
        await asyncio.gather(*(c.submit(i) for i in range(-4, 0)))  # busy: a batch of 4
        doomed = asyncio.create_task(c.submit(0))
        kept = asyncio.create_task(c.submit(1))
        await asyncio.sleep(0.0003)
        doomed.cancel()
        assert await kept == "r1"
        assert doomed.cancelled()
        assert sender.batches[1] == [1]
        await c.aclose()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run_virtual(main)


def test_under_load_a_second_batch_flies_only_once_as_large_as_the_last() -> None:
    async def main(loop: VirtualClockLoop) -> None:
        sender = TimedSender(loop, hold=True)
        c: Coalescer[int, str] = Coalescer(sender, max_batch=8, max_in_flight=2, linger=BOUND)
        first = [asyncio.create_task(c.submit(i)) for i in range(4)]
        await spin()
        assert sender.batches == [[0, 1, 2, 3]]  # idle: at once; now a batch of 4 flies
        few = [asyncio.create_task(c.submit(i)) for i in (4, 5)]
        await asyncio.sleep(0.01)  # long past the linger bound
        assert len(sender.batches) == 1  # two items wait for the batch in flight
        more = [asyncio.create_task(c.submit(i)) for i in (6, 7)]
        await spin()
        assert sender.batches[1] == [4, 5, 6, 7]  # as large as the last: the second slot
        sender.release.set()
        assert await asyncio.gather(*first, *few, *more) == [f"r{i}" for i in range(8)]
        await c.aclose()

    run_virtual(main)


@pytest.mark.anyio
async def test_without_linger_both_slots_are_used_at_once() -> None:
    sender = FakeSender(hold=True)
    c: Coalescer[int, str] = Coalescer(sender, max_batch=8, max_in_flight=2)
    first = [asyncio.create_task(c.submit(i)) for i in range(4)]
    await spin()
    few = [asyncio.create_task(c.submit(i)) for i in (4, 5)]
    await spin()
    assert sender.batches == [[0, 1, 2, 3], [4, 5]]
    sender.release.set()
    await asyncio.gather(*first, *few)
    await c.aclose()
