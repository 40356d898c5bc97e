"""The async HTTP client for the Transit hot path, chosen by measurement: httpx.AsyncClient
against aiohttp, the same batch workload side by side in one process and one run.

Each round sends the same Transit encrypt batches (``BATCH`` items of plaintext+context,
``IN_FLIGHT`` calls at a time, as the coalescer does under load) through one client with
keep-alive connections, on uvloop as the services run. Rounds alternate between the two
clients so that background load hits both alike; the median round is reported. CPU is this
process's own (``time.process_time``): what the client costs the service per Transit call.
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import uvloop

BATCH = 4
IN_FLIGHT = 4
CALLS = 600

Post = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class ClientFigures:
    cpu_ms: list[float] = field(default_factory=list)  # process CPU per Transit call
    calls_per_s: list[float] = field(default_factory=list)

    def median_cpu(self) -> float:
        return statistics.median(self.cpu_ms)

    def median_rate(self) -> float:
        return statistics.median(self.calls_per_s)


def _payload(i: int) -> dict[str, Any]:
    ctx = base64.b64encode(f"CA{i:032x}:card_last4".encode()).decode()
    return {"batch_input": [{"plaintext": "MTIzNA==", "context": ctx}] * BATCH}


async def _round(post: Post, calls: int) -> tuple[float, float]:
    queue = iter(range(calls))

    async def worker() -> None:
        for i in queue:
            body = await post(_payload(i))
            results = body["data"]["batch_results"]
            assert len(results) == BATCH and results[0]["ciphertext"].startswith("vault:v")

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu * 1000 / calls, calls / wall


async def _compare(addr: str, token: str, rounds: int) -> dict[str, ClientFigures]:
    url = f"{addr}/v1/transit/encrypt/ivr-dtmf"
    headers = {"X-Vault-Token": token}
    async with (
        httpx.AsyncClient(
            timeout=5, headers=headers, limits=httpx.Limits(max_keepalive_connections=IN_FLIGHT)
        ) as hx,
        aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=5)) as aio,
    ):

        async def via_httpx(payload: dict[str, Any]) -> dict[str, Any]:
            response = await hx.post(url, json=payload)
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

        async def via_aiohttp(payload: dict[str, Any]) -> dict[str, Any]:
            async with aio.post(url, json=payload) as response:
                response.raise_for_status()
                body: dict[str, Any] = await response.json()
                return body

        clients: dict[str, Post] = {"httpx": via_httpx, "aiohttp": via_aiohttp}
        figures = {name: ClientFigures() for name in clients}
        for post in clients.values():  # warm up: connections, imports, caches
            await _round(post, 50)
        for _ in range(rounds):
            for name, post in clients.items():
                cpu, rate = await _round(post, CALLS)
                figures[name].cpu_ms.append(cpu)
                figures[name].calls_per_s.append(rate)
    return figures


def compare(addr: str, token: str, *, rounds: int) -> dict[str, ClientFigures]:
    return uvloop.run(_compare(addr, token, rounds))
