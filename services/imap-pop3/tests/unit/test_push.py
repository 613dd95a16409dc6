"""The push hub: one NATS subscription per watched user, kept a while after the last watcher, events
handed to the watchers of that user only; a malformed event is dropped."""

from __future__ import annotations

import asyncio

from mailflow import natsconn
from mailflow.contracts import subjects
from mailflow.contracts.messages import MailboxEvent
from mailflow_imap_pop3.push import Hub
from tests.support import await_for


async def test_hub_over_real_nats(nats_url):
    nc = await natsconn.connect(nats_url, "hub")
    pub = await natsconn.connect(nats_url, "store")
    hub = Hub(nc, linger=0.2)
    got_a, got_b = [], []
    try:
        await hub.watch(7, got_a.append)
        await hub.watch(7, got_b.append)
        await hub.watch(8, got_a.append)
        assert hub.subscribed(7) and hub.subscribed(8)
        epoch = hub.epoch()
        assert hub.heard_all(7, epoch) and not hub.heard_all(9, epoch)  # 9: not subscribed
        assert not hub.heard_all(7, epoch - 1)  # a reconnection since: events may be lost
        event = MailboxEvent(user_id=7, mailbox_id=3, mailbox="INBOX", kind="appended", uids=[5], modseq=9)
        await pub.publish(subjects.mailbox_events(7), event.to_bytes())
        await pub.publish(subjects.mailbox_events(7), b"not json")
        await pub.flush()
        await await_for(lambda: asyncio.sleep(0, len(got_a) == 1 and len(got_b) == 1), what="event")
        assert got_a[0] == event
        await hub.unwatch(7, got_a.append)
        await hub.unwatch(7, got_b.append)
        assert hub.subscribed(7)  # lingers
        await hub.watch(7, got_b.append)  # back within the linger: same subscription
        await hub.unwatch(7, got_b.append)
        await await_for(lambda: asyncio.sleep(0, not hub.subscribed(7)), what="subscription dropped")
        assert hub.subscribed(8)
    finally:
        await hub.close()
        await natsconn.close(nc)
        await natsconn.close(pub)


def test_hub_without_nats_dispatches_what_it_is_given():
    hub = Hub(None)
    got = []
    asyncio.run(hub.watch(1, got.append))
    assert not hub.heard_all(1, hub.epoch())  # no NATS: NOOP always asks the store
    hub.dispatch(MailboxEvent(user_id=2, mailbox_id=1, mailbox="INBOX", kind="flags"))
    hub.dispatch(MailboxEvent(user_id=1, mailbox_id=1, mailbox="INBOX", kind="flags"))
    assert [e.user_id for e in got] == [1]
