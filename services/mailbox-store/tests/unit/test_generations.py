"""sessions.Generations: each user's generation from memory, read at most once per `ttl`, changes of
this process at once, and nothing put back by a read that overlapped a change."""

from __future__ import annotations

import asyncio

import pytest

from mailflow_mailbox_store.sessions import Generations, Session


class Db:
    def __init__(self, gens: dict[int, int | None]):
        self.gens, self.reads = gens, []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def read(self, ids: list[int]) -> dict[int, int | None]:
        self.reads.append(list(ids))
        seen = {i: self.gens[i] for i in ids if i in self.gens}  # as of when the read began
        await self.gate.wait()
        if self.fail:
            raise ConnectionError("database down")
        return seen


def make(db: Db, now: list[float], size: int = 100) -> Generations:
    return Generations(db.read, ttl=1.0, size=size, clock=lambda: now[0])


async def test_read_once_per_ttl_and_a_gone_user_is_an_answer():
    now, db = [0.0], Db({1: 3})
    g = make(db, now)
    assert await g.current(1) == 3 and await g.current(2) is None  # 2: no such user (deleted)
    assert await g.valid(Session(1, "s", 2**40, 3)) and not await g.valid(Session(2, "s", 2**40, 0))
    assert db.reads == [[1], [2]]
    now[0] = 1.0
    db.gens[1] = 4
    assert await g.current(1) == 4 and db.reads[-1] == [1]


async def test_concurrent_checks_share_one_read_and_failures_are_not_remembered():
    now, db = [0.0], Db({1: 3})
    g = make(db, now)
    db.gate.clear()
    waiting = [asyncio.create_task(g.current(1)) for _ in range(5)]
    await asyncio.sleep(0)
    db.gate.set()
    assert await asyncio.gather(*waiting) == [3] * 5 and db.reads == [[1]]
    db.fail = True
    with pytest.raises(ConnectionError):
        await g.current(7)
    db.fail = False
    db.gens[7] = 1
    assert await g.current(7) == 1


async def test_a_change_here_counts_at_once_and_an_overlapping_read_is_not_remembered():
    now, db = [0.0], Db({1: 3})
    g = make(db, now)
    assert await g.current(1) == 3
    db.gens[1] = 4
    g.changed(1, 4)  # password changed in this process (committed)
    assert not await g.valid(Session(1, "s", 2**40, 3)) and await g.valid(Session(1, "s", 2**40, 4))
    now[0] = 2.0
    db.gate.clear()
    reading = asyncio.create_task(g.current(1))  # begins before the next change, answers the old 4
    await asyncio.sleep(0)
    db.gens[1] = 5
    g.changed(1, 5)
    db.gate.set()
    assert await reading == 4  # used by the call that asked...
    assert await g.current(1) == 5 and len(db.reads) == 2  # ...but not put back over the change


async def test_current_many_reads_only_what_it_lacks_and_the_cache_is_bounded():
    now, db = [0.0], Db({1: 1, 2: 2, 3: 3})
    g = make(db, now, size=2)
    assert await g.current_many([1, 2]) == {1: 1, 2: 2}
    assert await g.current_many([2, 3, 3]) == {2: 2, 3: 3} and db.reads == [[1, 2], [3]]
    assert await g.current(1) == 1 and db.reads[-1] == [1]  # 1 was the least recently used: gone
