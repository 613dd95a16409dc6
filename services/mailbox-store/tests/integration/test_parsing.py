"""Parsing a message never blocks the store's event loop (issue 12.2): deliver and APPEND parse in the
store's worker threads, and mailflow.mime's work budget keeps every parse short, so the loop goes on
answering meanwhile. A hostile message is stored whole and stays fetchable.

Before, a Content-Type parameter followed by 64 KiB of whitespace held the GIL inside one regular
expression for ~20 s: the loop (and every request to the store) stood still, and again on each retry.
"""

from __future__ import annotations

import asyncio

import pytest_asyncio

from mailflow import mime
from mailflow.store.api import DeliverItem

HOSTILE = [
    b"Content-Type: text/plain; a=b" + b" " * 65_536 + b"x\r\n\r\nbody\r\n",
    b'Content-Type: multipart/mixed; boundary="a:"\r\n\r\n' + b"--a:\r\n" * 11_000,
    b"From: " + b"a@," * 22_000 + b"\r\n\r\nbody\r\n",
]


@pytest_asyncio.fixture(loop_scope="module")
async def alice(admin, client, domain):
    r = await admin.post("/admin/users", json={"address": f"alice@{domain}", "password": "alice-pw"})
    assert r.status_code == 201, r.text
    return await client.authenticate(f"alice@{domain}", "alice-pw")


class LoopWatch:
    """The longest the event loop went without running a 5 ms timer callback."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.longest, self.last, self.running = 0.0, self.loop.time(), True
        self.loop.call_later(0.005, self.tick)

    def tick(self) -> None:
        now = self.loop.time()
        self.longest = max(self.longest, now - self.last)
        self.last = now
        if self.running:
            self.loop.call_later(0.005, self.tick)


async def test_hostile_messages_are_stored_without_stalling_the_loop(client, alice):
    watch = LoopWatch()
    items = [DeliverItem(f"H{i}/{alice.address}", alice.address, raw) for i, raw in enumerate(HOSTILE)]
    results = await client.deliver(items)
    appended = await client.append(alice, "INBOX", HOSTILE[0], frozenset(), None)
    watch.running = False
    assert [r.status for r in results] == ["stored"] * len(HOSTILE) and appended.uid == len(HOSTILE) + 1
    assert watch.longest < 0.5, f"the event loop stood still for {watch.longest:.3f} s"
    sel = await client.select(alice, "INBOX")
    whole = await client.fetch_bodies(alice, sel.status.id, sel.uids)
    assert [whole[u] for u in sel.uids] == [*HOSTILE, HOSTILE[0]]  # every byte, as it came
    parsed = await client.fetch_parsed(alice, sel.status.id, sel.uids[:1])
    (name, value), charset = mime.from_json(parsed[sel.uids[0]]).body.params
    assert name == "A" and value == "b" + " " * 65_536 + "x" and charset == ("CHARSET", "us-ascii")
