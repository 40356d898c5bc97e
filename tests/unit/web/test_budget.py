"""service/web/budget.py: the deadline a request's code reads."""

from __future__ import annotations

import asyncio

import pytest

from service.web import budget


def test_outside_a_request_there_is_no_budget() -> None:
    async def outside() -> float | None:
        return budget.left()

    assert asyncio.run(outside()) is None


def test_left_counts_down_and_the_block_ends_at_the_deadline() -> None:
    async def inside() -> tuple[float, float]:
        async with budget.within(0.5):
            first = budget.left()
            await asyncio.sleep(0.1)
            second = budget.left()
            assert first is not None and second is not None
            return first, second

    first, second = asyncio.run(inside())
    assert 0.45 < first <= 0.5 and second <= first - 0.09

    async def too_long() -> None:
        async with budget.within(0.05):
            await asyncio.sleep(5)

    with pytest.raises(TimeoutError):
        asyncio.run(too_long())


def test_each_request_its_own_deadline() -> None:
    async def request(seconds: float) -> float | None:
        async with budget.within(seconds):
            await asyncio.sleep(0)
            return budget.left()

    async def both() -> list[float | None]:
        return list(await asyncio.gather(request(1.0), request(2.0)))

    short, long = asyncio.run(both())
    assert short is not None and long is not None and 0.9 < short < 1.0 < 1.9 < long
