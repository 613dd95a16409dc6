"""How the event loop fared while a coroutine ran: a task beside it sleeps 1 ms at a time and notes each
gap. `ticks` says whether the loop ran at all meanwhile (work on the loop leaves it none); `longest`
is the longest pause, a figure to measure and report, not to assert in a unit test.

    watched = await watch(verify(message, dns, now))
    watched.result, watched.took, watched.longest, watched.ticks
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Watched(Generic[T]):
    result: T
    took: float  # seconds
    longest: float  # the longest gap between two ticks, seconds
    ticks: int


async def watch(work: Awaitable[T]) -> Watched[T]:
    gaps: list[float] = []
    stop = asyncio.Event()

    async def tick():
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    before, started = len(gaps), time.perf_counter()
    result = await work
    took = time.perf_counter() - started
    stop.set()
    await ticker
    during = gaps[before:]
    return Watched(result, took, max(during, default=took), len(during))
