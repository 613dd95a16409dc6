"""The recipient cache: hits, short negative entries, shared in-flight lookups, no cached failures."""

from __future__ import annotations

import asyncio

import pytest

from mailflow.errors import ServiceUnavailable
from mailflow.store.api import Resolution
from mailflow_smtp_ingress.directory import CachedDirectory


class Slow:
    def __init__(self):
        self.calls = 0
        self.fail = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def resolve(self, address):
        self.calls += 1
        await self.gate.wait()
        if self.fail:
            raise ServiceUnavailable("down")
        status = "local" if address.startswith("alice") else "unknown_user"
        return Resolution(address, status)

    async def authenticate(self, username, password, service="imap"):
        return None


async def test_positive_and_negative_ttls():
    now = [0.0]
    inner = Slow()
    d = CachedDirectory(inner, ttl=30, negative_ttl=5, clock=lambda: now[0])
    assert (await d.resolve("alice@x")).status == "local"
    assert (await d.resolve("nobody@x")).status == "unknown_user"
    now[0] = 10
    await d.resolve("alice@x")
    await d.resolve("nobody@x")
    assert inner.calls == 3  # alice cached, nobody asked again after 5 s


async def test_concurrent_lookups_share_one_call_and_failures_are_not_cached():
    inner = Slow()
    inner.gate.clear()
    d = CachedDirectory(inner)
    tasks = [asyncio.create_task(d.resolve("alice@x")) for _ in range(10)]
    await asyncio.sleep(0)
    inner.gate.set()
    assert {r.status for r in await asyncio.gather(*tasks)} == {"local"}
    assert inner.calls == 1
    inner.fail = True
    with pytest.raises(ServiceUnavailable):
        await d.resolve("bob@x")
    inner.fail = False
    assert (await d.resolve("bob@x")).status == "unknown_user"


async def test_a_hanging_store_is_a_timeout():
    inner = Slow()
    inner.gate.clear()
    d = CachedDirectory(inner, timeout=0.05)
    with pytest.raises(ServiceUnavailable):
        await d.resolve("alice@x")


async def test_the_cache_is_bounded_and_forget_empties_it():
    inner = Slow()
    d = CachedDirectory(inner, size=2)
    for a in ("alice1@x", "alice2@x", "alice1@x", "alice3@x"):  # alice1 used again: alice2 goes
        await d.resolve(a)
    assert inner.calls == 3
    assert d.cached("alice1@x") and d.cached("alice3@x") and d.cached("alice2@x") is None
    d.forget()
    assert d.cached("alice1@x") is None
