"""Helpers for tests: real servers on loopback, free ports, waiting without sleep()."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

from mailflow.stack import free_port  # noqa: F401 (tests import it from here)


class Clock:
    """A clock a test moves by hand (`clock.now += 61`), for code that takes `clock=`."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


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


def cpu_seconds(fn: Callable[..., object], *args: object, runs: int = 3) -> float:
    """The least CPU time of this thread that `fn(*args)` took in `runs` calls: what a parse costs,
    nearly whatever else the machine is busy with (for the parsers' budget tests)."""
    best = float("inf")
    for _ in range(runs):
        started = time.thread_time()
        fn(*args)
        best = min(best, time.thread_time() - started)
    return best


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


@contextlib.contextmanager
def postgres_schema(base: str) -> Iterator[str]:
    """A schema of its own in the PostgreSQL database at `base` (dropped afterwards): yields a URL whose
    connections use it, so tests and services share one database without seeing each other's tables."""
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def mailflow_cli(env: dict[str, str]) -> Callable[..., Awaitable[str]]:
    """`await mailflow("queue", "list", code=0)`: the `mailflow` command (typer's runner, in a thread, so
    the services under test keep running in the loop) with `env`; asserts the exit code, returns the output."""
    from typer.testing import CliRunner

    from mailflow.cli.main import app

    runner = CliRunner()

    async def mailflow(*args: str, code: int = 0) -> str:
        res = await asyncio.to_thread(runner.invoke, app, list(args), env=env)
        assert res.exit_code == code, (args, res.output)
        return res.output

    return mailflow
