"""mailflow.cache: bounds, expiry per entry, least recently used first out, costs; one call per key."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailflow.cache import Cache, SingleFlight, memo


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_entry_expires_after_its_own_ttl():
    clock = Clock()
    c: Cache[str, str] = Cache(10, clock)
    c.put("long", "a", ttl=300)
    c.put("short", "b", ttl=5)
    c.put("forever", "c")
    clock.now += 5
    assert c.get("short") is None and c.get("long") == "a"
    clock.now += 295
    assert c.get("long") is None and c.get("forever") == "c"
    assert c.items() == [("forever", "c")]


def test_the_least_recently_used_goes_first():
    c: Cache[int, int] = Cache(3, Clock())
    for k in (1, 2, 3):
        c.put(k, k * 10)
    assert c.get(1) == 10  # 1 is now the most recently used: 2 goes next
    c.put(4, 40)
    assert [k for k, _ in c.items()] == [3, 1, 4] and len(c) == 3


def test_costs_bound_the_total_and_an_oversized_value_is_not_kept():
    c: Cache[str, bytes] = Cache(100, Clock())
    c.put("a", b"x" * 60, cost=60)
    c.put("b", b"x" * 30, cost=30)
    c.put("c", b"x" * 20, cost=20)  # 110 > 100: "a" goes
    assert c.get("a") is None and c.cost == 50
    c.put("b", b"x" * 101, cost=101)  # bigger than the whole cache: not kept, and the old "b" is out of date
    assert c.get("b") is None and c.get("c") is not None and c.cost == 20


def test_a_ttl_of_zero_keeps_nothing_and_drops_the_old_value():
    c: Cache[str, int] = Cache(10, Clock())
    c.put("k", 1, ttl=60)
    c.put("k", 2, ttl=0)
    assert c.get("k") is None and len(c) == 0


def test_none_is_a_value_told_apart_from_a_miss():
    c: Cache[int, int | None] = Cache(10, Clock())
    missing = object()
    c.put(1, None, ttl=60)
    assert c.get(1, missing) is None and c.get(2, missing) is missing


def test_pop_and_clear():
    c: Cache[str, int] = Cache(10, Clock())
    c.put("a", 1, cost=4)
    c.put("b", 2, cost=4)
    assert c.pop("a") == 1 and c.pop("a", -1) == -1 and c.cost == 4
    c.clear()
    assert len(c) == 0 and c.cost == 0


@given(st.lists(st.tuples(st.sampled_from("put get pop tick".split()), st.integers(0, 12), st.integers(0, 5))))
def test_against_a_model(ops):
    """Whatever happens, the cache holds at most `size` of cost, never answers with an expired entry,
    and answers what was last put unless it was evicted, popped or expired."""
    clock = Clock()
    c: Cache[int, int] = Cache(6, clock)
    model: dict[int, tuple[int, float]] = {}
    for op, key, n in ops:
        if op == "put":
            c.put(key, n, ttl=n, cost=1 + key % 3)
            model[key] = (n, clock.now + n)
        elif op == "get":
            got = c.get(key)
            if got is not None:
                assert model[key][0] == got and model[key][1] > clock.now
        elif op == "pop":
            c.pop(key)
            model.pop(key, None)
        else:
            clock.now += n
        assert c.cost <= c.size
        assert c.cost == sum(1 + k % 3 for k in c._items)


async def test_concurrent_misses_share_one_call():
    calls = []
    gate = asyncio.Event()

    async def fetch():
        calls.append(1)
        await gate.wait()
        return "answer"

    flight: SingleFlight[str, str] = SingleFlight()
    waiting = [asyncio.create_task(flight.run("k", fetch)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == ["answer"] * 5 and len(calls) == 1
    assert await flight.run("k", fetch) == "answer" and len(calls) == 2  # done: the next miss calls again


async def test_a_failure_reaches_every_waiter_and_is_not_remembered():
    gate = asyncio.Event()

    async def fail():
        await gate.wait()
        raise ConnectionError("store down")

    flight: SingleFlight[str, str] = SingleFlight()
    waiting = [asyncio.create_task(flight.run("k", fail)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)

    async def ok():
        return "fine"

    assert await flight.run("k", ok) == "fine"


@pytest.mark.parametrize("cancelled", ["the caller that made the call", "a waiter"])
async def test_a_cancellation_ends_only_the_cancelled_caller(cancelled):
    """The caller whose call is under way is cancelled: the waiter makes the call again itself (it
    was not cancelled). A waiter is cancelled: the call goes on for the others."""
    calls = []
    gate = asyncio.Event()

    async def fetch():
        calls.append(1)
        await gate.wait()
        return len(calls)

    flight: SingleFlight[str, int] = SingleFlight()
    first = asyncio.create_task(flight.run("k", fetch))
    await asyncio.sleep(0)
    second = asyncio.create_task(flight.run("k", fetch))
    await asyncio.sleep(0)
    gone, kept = (second, first) if cancelled == "a waiter" else (first, second)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    await asyncio.sleep(0)
    gate.set()
    assert await kept == len(calls) == (1 if cancelled == "a waiter" else 2)


def test_memo_keeps_results_by_their_text_within_a_budget_of_characters():
    calls = []

    @memo(100)
    def parse(text: str, name: str) -> str:
        calls.append(text)
        if text.startswith("bad"):
            raise ValueError(text)
        return text.upper()

    assert parse("abc", "n") == parse("abc", "n") == "ABC"
    assert calls == ["abc"]  # the second call was a hit
    for _ in range(2):
        with pytest.raises(ValueError):
            parse("bad", "n")
    assert calls == ["abc", "bad", "bad"]  # a call that raised is not kept
    big = "x" * 99
    assert parse(big, "n") == big.upper()  # 100 characters: it fits, alone
    parse("abc", "n")
    assert calls[-1] == "abc"  # pushed out: what is kept never passes 100 characters
    assert parse("y" * 200, "n") and parse("y" * 200, "n")
    assert calls[-2:] == ["y" * 200] * 2  # over the whole budget: never kept
    assert parse.__name__ == "parse"
