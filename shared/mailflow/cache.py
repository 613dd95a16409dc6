"""In-memory caches: `Cache`, a bounded map whose entries expire, `SingleFlight`, one call at a time
per key, and `memo`, a function's results kept in a `Cache` by their text arguments. Every cache of the
services is one of these.

`Cache` drops the least recently used entry once the entries' cost (1 each, or what `put` says, e.g.
bytes) passes `size`, and each entry is gone `ttl` seconds after it was put (each its own: a DNS
answer's TTL, a shorter one for "no such user"). Nothing in it fails or blocks; it is not locked, so
threads that share one hold their own lock around it. `SingleFlight` makes concurrent misses of one
key share one call: they all get its result or its exception (failures are not remembered), and the
cancellation of the caller that made the call makes the next waiter call again, never fails it.

Why not cachetools (8.0, measured on this machine, timeit): a hit of `TTLCache.get` costs 4.1 us and of
`TLRUCache.get` (the one with a TTL per entry) 5.6 us, against 1.0 us here, because `get` goes through
`MutableMapping.__contains__`, `__getitem__` and a timer context manager; a `put` costs 5-9 us against
1.4. That is 3-4 us more on every IMAP command (the session check) and every RCPT. It also has no way
to say an entry's TTL at `put` but a function of (key, value, now), and no single-flight.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Cache(Generic[K, V]):
    def __init__(self, size: int, clock: Callable[[], float] = time.monotonic):
        self.size, self.clock = size, clock
        self.cost = 0  # of the entries held now
        self._items: OrderedDict[K, tuple[V, float, int]] = OrderedDict()  # key -> (value, expires, cost)

    def get(self, key: K, default: V | None = None) -> V | None:
        """The live value of `key` (it becomes the most recently used), else `default`."""
        hit = self._items.get(key)
        if hit is None:
            return default
        if hit[1] <= self.clock():
            self.pop(key)
            return default
        self._items.move_to_end(key)
        return hit[0]

    def put(self, key: K, value: V, ttl: float = math.inf, cost: int = 1) -> None:
        """Keep `value` for `ttl` seconds. A `ttl` <= 0 or a cost over the whole size keeps nothing,
        and drops what the key held (it is out of date)."""
        self.pop(key)
        if ttl <= 0 or cost > self.size:
            return
        self._items[key] = (value, self.clock() + ttl, cost)
        self.cost += cost
        while self.cost > self.size:
            _, (_, _, gone) = self._items.popitem(last=False)
            self.cost -= gone

    def pop(self, key: K, default: V | None = None) -> V | None:
        hit = self._items.pop(key, None)
        if hit is None:
            return default
        self.cost -= hit[2]
        return hit[0]

    def items(self) -> list[tuple[K, V]]:
        """The live entries, least recently used first."""
        now = self.clock()
        return [(k, v) for k, (v, expires, _) in self._items.items() if expires > now]

    def clear(self) -> None:
        self._items.clear()
        self.cost = 0

    def __len__(self) -> int:
        """Entries held, expired ones not yet dropped included."""
        return len(self._items)


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._calls: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        """`await call()`, unless a call for `key` is under way: then its outcome."""
        while (pending := self._calls.get(key)) is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled() or asyncio.current_task().cancelling():
                    raise  # this caller was cancelled, not the call
        fut: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._calls[key] = fut
        try:
            value = await call()
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: no warning when nobody waited
            raise
        finally:
            del self._calls[key]
        fut.set_result(value)
        return value


def memo(chars: int) -> Callable[[Callable[..., V]], Callable[..., V]]:
    """A pure function of strings (positional), its results kept by its arguments in a `Cache` whose
    entries cost their arguments' length: at most `chars` characters of arguments in all, however long
    the texts a client chooses (a DNS record can be 64 KiB; functools.lru_cache bounds only the count).
    A call that raises is not kept."""

    def wrap(f: Callable[..., V]) -> Callable[..., V]:
        kept: Cache[tuple[str, ...], tuple[V]] = Cache(chars)

        @functools.wraps(f)
        def cached(*args: str) -> V:
            hit = kept.get(args)
            if hit is None:
                hit = (f(*args),)
                kept.put(args, hit, cost=sum(map(len, args)))
            return hit[0]

        return cached

    return wrap
