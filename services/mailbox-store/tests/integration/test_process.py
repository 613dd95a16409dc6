"""The store as a process (python -m mailflow_mailbox_store): durable across kill -9, clean on SIGTERM,
migrations at startup, events on real NATS."""

from __future__ import annotations

import asyncio
import sqlite3

import httpx
import pytest

from mailflow import natsconn
from mailflow.contracts import subjects
from mailflow.contracts.messages import MailboxEvent
from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.stack import Ports, Stack
from mailflow.store.api import DeliverItem
from mailflow.store.client import StoreClient


def message(n: int) -> bytes:
    return f"From: a@elsewhere.test\r\nSubject: n{n}\r\n\r\nbody {n}\r\n".encode()


async def setup_user(st: Stack) -> None:
    async with httpx.AsyncClient(
        base_url=st.http_url("mailbox-store"), headers={ADMIN_TOKEN_HEADER: st.admin_token}
    ) as a:
        assert (await a.post("/admin/domains", json={"name": "example.test"})).status_code == 201
        r = await a.post("/admin/users", json={"address": "alice@example.test", "password": "pw"})
        assert r.status_code == 201


@pytest.mark.slow
def test_a_delivery_that_returned_survives_kill_9(tmp_path):
    with Stack(tmp_path, Ports.free(), services=("mailbox-store",)) as st:

        async def deliver_then_read():
            await setup_user(st)
            c = StoreClient(st.http_url("mailbox-store"), st.service_token)
            res = await c.deliver([DeliverItem(f"k{i}", "alice@example.test", message(i)) for i in range(20)])
            assert {r.status for r in res} == {"stored"}
            await c.close()

        asyncio.run(deliver_then_read())
        st.kill("mailbox-store")  # SIGKILL right after the 200: nothing may be lost
        st.start_service("mailbox-store")

        async def read_back():
            c = StoreClient(st.http_url("mailbox-store"), st.service_token)
            p = await c.authenticate("alice@example.test", "pw")
            sel = await c.select(p, "INBOX")
            bodies = await c.fetch_bodies(p, sel.status.id, sel.uids)
            again = await c.deliver([DeliverItem("k3", "alice@example.test", message(3))])
            await c.close()
            return sel, bodies, again

        sel, bodies, again = asyncio.run(read_back())
        assert sel.uids == list(range(1, 21))
        assert [bodies[u] for u in sel.uids] == [message(i) for i in range(20)]
        assert again[0].status == "duplicate"
        db = sqlite3.connect(st.data_dir / "mailbox-store.db")
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.close()
        st.stop_service("mailbox-store")  # SIGTERM: a clean exit
        assert st.procs[("mailbox-store", 0)].popen.returncode == 0


@pytest.mark.slow
def test_events_reach_nats(tmp_path):
    with Stack(tmp_path, Ports.free(), services=("mailbox-store",)) as st:

        async def run():
            await setup_user(st)
            nc = await natsconn.connect(st.nats_url, "imap-pop3", **st.nats_login("imap-pop3"))  # who listens
            got: asyncio.Queue = asyncio.Queue()
            c = StoreClient(st.http_url("mailbox-store"), st.service_token)
            p = await c.authenticate("alice@example.test", "pw")

            async def on_event(m):
                got.put_nowait(m.data)

            await nc.subscribe(subjects.mailbox_events(p.user_id), cb=on_event)
            await nc.flush()
            for _ in range(100):  # the store connects to NATS in the background
                await c.deliver([DeliverItem(f"probe{_}", "alice@example.test", message(0))])
                try:
                    data = await asyncio.wait_for(got.get(), 0.2)
                    break
                except TimeoutError:
                    continue
            event = MailboxEvent.from_bytes(data)
            assert event.kind == "appended" and event.mailbox == "INBOX" and event.user_id == p.user_id
            await c.close()
            await natsconn.close(nc)

        asyncio.run(run())
