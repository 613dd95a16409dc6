"""Helpers for tests: real servers on loopback, free ports, waiting without sleep()."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from mailflow.stack import free_port  # noqa: F401 (tests import it from here)


def wait_for(pred: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> object:
    """Poll `pred` until it returns something truthy; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
        time.sleep(interval)


async def await_for(
    pred: Callable[[], Awaitable[object]], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = await pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
        await asyncio.sleep(interval)
