"""Two mailbox-store processes on one PostgreSQL with the bodies in it (issue 16: the store as N replicas).

Both take deliveries (the same keys on both at once, as a delivery retried against the other replica
would), APPENDs (the same body on both, so both store that new body at the same moment) and flag
changes, concurrently, into the same mailboxes; batches name their recipients in different orders on
the two, which makes their transactions lock the same rows in different orders (deadlocks, which the
writer runs again). Then: every key stored exactly once per user, UIDs dense and unique per mailbox,
every change its own MODSEQ per mailbox (from the events both published on NATS) in UID order for
appends, both processes showing the same mailbox and reading every body, and no body row left over."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter, defaultdict
from itertools import pairwise

import httpx
import pytest
import sqlalchemy as sa

from mailflow import natsconn
from mailflow.contracts import subjects
from mailflow.contracts.messages import MailboxEvent
from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.errors import ServiceUnavailable
from mailflow.stack import Ports, Stack
from mailflow.store.api import DeliverItem
from mailflow.store.client import StoreClient
from tests.support import await_for, postgres_schema

USERS = ("alice", "bob", "carol")
DELIVERERS, BATCHES, ITEMS = 3, 8, 4  # per replica; every key is delivered on both replicas
APPENDS = 15  # per replica, into alice's INBOX; the same bodies on both
CLAIMERS, CLAIMS = 3, 12  # per replica: sessions claiming \Recent in alice's INBOX as mail comes
QUOTA_FILLERS, QUOTA_ITEMS = 2, 8  # per replica, messages of 1,000 bytes to dora, whose quota takes 10


def body(key: str, size: int = 0) -> bytes:
    raw = f"From: a@elsewhere.test\r\nSubject: {key}\r\nMessage-ID: <{key}@elsewhere.test>\r\n\r\nbody of {key}\r\n"
    return raw.encode().ljust(size, b"x")


REFUSED: list[str] = []  # the 503s callers saw


async def retrying(call):
    """What the delivery service and imap-pop3 do with a 503: ask again (and note it)."""
    for _ in range(20):
        try:
            return await call()
        except ServiceUnavailable as exc:
            REFUSED.append(str(exc))
            await asyncio.sleep(0.05)
    return await call()


@pytest.mark.slow
def test_two_replicas_write_the_same_mailboxes_concurrently(tmp_path):
    base = os.environ.get("MAILFLOW_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("MAILFLOW_TEST_POSTGRES_URL is not set")
    with postgres_schema(base) as url:
        env = {"MAILFLOW_STORE_DATABASE_URL": url, "MAILFLOW_STORE_BLOBS": "postgres"}
        with Stack(tmp_path, Ports.free(), services=("mailbox-store",), env=env) as st:
            st.start()
            second = st.start_service("mailbox-store", 1)
            urls = [st.http_url("mailbox-store"), f"http://{st.ports.host}:{second.http_port}"]
            asyncio.run(scenario(st, urls, url))


async def scenario(st: Stack, urls: list[str], db_url: str) -> None:
    async with httpx.AsyncClient(base_url=urls[0], headers={ADMIN_TOKEN_HEADER: st.admin_token}) as a:
        assert (await a.post("/admin/domains", json={"name": "example.test"})).status_code == 201
        for user in (*USERS, "probe0", "probe1"):
            r = await a.post("/admin/users", json={"address": f"{user}@example.test", "password": "pw"})
            assert r.status_code == 201
        r = await a.post("/admin/users", json={"address": "dora@example.test", "password": "pw", "quota_bytes": 10_000})
        assert r.status_code == 201
    clients = [StoreClient(u, st.service_token) for u in urls]
    nc = await natsconn.connect(st.nats_url, "imap-pop3", **st.nats_login("imap-pop3"))
    events: list[MailboxEvent] = []

    async def on_event(m):
        events.append(MailboxEvent.from_bytes(m.data))

    await nc.subscribe(subjects.MAILBOX_EVENTS_ALL, cb=on_event)
    await nc.flush()
    # each replica publishes once connected to NATS (in the background): probe until each is heard
    probes: set[int] = set()
    for n, c in enumerate(clients):
        probe = (await c.authenticate(f"probe{n}@example.test", "pw")).user_id
        probes.add(probe)

        async def heard(c=c, n=n, probe=probe) -> bool:
            if any(e.user_id == probe for e in events):
                return True
            await c.deliver([DeliverItem(f"probe.{time.monotonic()}", f"probe{n}@example.test", body("probe"))])
            return False

        await await_for(heard, timeout=20, interval=0.2, what=f"an event from replica {n}")
    events.clear()
    await nc.flush()
    REFUSED.clear()
    principals = [await c.authenticate("alice@example.test", "pw") for c in clients]
    inbox = (await clients[0].status(principals[0], "INBOX")).id

    async def deliverer(r: int, n: int) -> list[str]:
        rng = random.Random(r * 100 + n)
        statuses = []
        for i in range(BATCHES):
            items = []
            for k in range(ITEMS):
                order = list(USERS)
                rng.shuffle(order)  # the two replicas lock these users' rows in different orders
                items += [DeliverItem(f"K{n}.{i}.{k}", f"{u}@example.test", body(f"K{n}.{i}.{k}")) for u in order]
            results = await retrying(lambda items=items: clients[r].deliver(items))
            statuses += [x.status for x in results]
        return statuses

    async def appender(r: int) -> list[int]:
        return [
            (await retrying(lambda j=j: clients[r].append(principals[r], "INBOX", body(f"A{j}")))).uid
            for j in range(APPENDS)
        ]

    async def flagger(r: int) -> None:
        flag = ("\\Seen", "\\Flagged")[r]
        for _ in range(10):
            sel = await retrying(lambda: clients[r].select(principals[r], "INBOX", claim_recent=False))
            if sel.uids:
                uids = sel.uids[-5:]
                await retrying(lambda uids=uids: clients[r].store_flags(principals[r], inbox, uids, "add", frozenset({flag})))

    async def quota_filler(r: int, n: int) -> list[str]:
        return [
            (await retrying(lambda j=j: clients[r].deliver([DeliverItem(f"Q{r}.{n}.{j}", "dora@example.test", body(f"Q{r}.{n}.{j}", 1000))])))[0].status
            for j in range(QUOTA_ITEMS)
        ]  # fmt: skip

    claimed: list[tuple[int, int]] = []  # [from, upto) of each \Recent claim that won

    async def claimer(r: int) -> None:
        """A session on replica r that learns of new mail in alice's INBOX and claims its \\Recent."""
        for _ in range(CLAIMS):
            upto = (await retrying(lambda: clients[r].status(principals[r], "INBOX"))).uidnext
            mark = await retrying(lambda upto=upto: clients[r].claim_recent(principals[r], inbox, upto))
            if mark is not None:
                claimed.append((mark, upto))

    work = [deliverer(r, n) for r in (0, 1) for n in range(DELIVERERS)]
    work += [appender(0), appender(1), flagger(0), flagger(1)]
    work += [quota_filler(r, n) for r in (0, 1) for n in range(QUOTA_FILLERS)]
    work += [claimer(r) for r in (0, 1) for _ in range(CLAIMERS)]
    results = await asyncio.gather(*work)
    statuses = Counter(s for part in results[: 2 * DELIVERERS] for s in part)
    keys = DELIVERERS * BATCHES * ITEMS * len(USERS)
    assert statuses == {"stored": keys, "duplicate": keys}, statuses  # each key: stored on one, duplicate on the other
    appended = results[2 * DELIVERERS] + results[2 * DELIVERERS + 1]
    assert len(set(appended)) == 2 * APPENDS
    filled = Counter(s for part in results[2 * DELIVERERS + 4 : 2 * DELIVERERS + 4 + 2 * QUOTA_FILLERS] for s in part)
    assert filled == {"stored": 10, "quota_exceeded": 2 * QUOTA_FILLERS * QUOTA_ITEMS - 10}, filled  # never past the quota

    # \Recent: each message of alice's INBOX went to exactly one session, whichever replica it was on
    final = await clients[1].select(principals[1], "INBOX")
    if final.recent:
        claimed.append((min(final.recent), final.status.uidnext))
    claimed.sort()
    assert len(claimed) > 2 and all(a[1] <= b[0] for a, b in pairwise(claimed)), claimed  # never one message twice
    covered = {u for lo, hi in claimed for u in range(lo, hi)}
    assert set(final.uids) <= covered  # and none left unclaimed

    # every key exactly once per user, UIDs dense, both replicas agree and read every body
    wanted_keys = sorted(f"K{n}.{i}.{k}" for n in range(DELIVERERS) for i in range(BATCHES) for k in range(ITEMS))
    for user in USERS:
        views = []
        for c in clients:
            p = await c.authenticate(f"{user}@example.test", "pw")
            sel = await c.select(p, "INBOX", claim_recent=False)
            bodies = await c.fetch_bodies(p, sel.status.id, sel.uids)
            views.append((sel.uids, sel.flags, sel.modseqs, sel.status.uidnext, sel.status.highestmodseq, bodies))
        assert views[0] == views[1]
        uids, _, modseqs, uidnext, highest, bodies = views[0]
        assert uids == list(range(1, len(uids) + 1)) and uidnext == len(uids) + 1
        assert max(modseqs) <= highest
        expected = [body(k) for k in wanted_keys]
        expected += [body(f"A{j}") for j in range(APPENDS) for _ in (0, 1)] if user == "alice" else []
        assert sorted(bodies[u] for u in uids) == sorted(expected)

    # every change of a mailbox has its own MODSEQ; appends got UIDs in MODSEQ order
    async def all_heard() -> bool:
        appended = sum(len(e.uids) for e in events if e.kind == "appended" and e.user_id not in probes)
        return appended == 3 * len(wanted_keys) + 2 * APPENDS + 10

    await await_for(all_heard, timeout=20, what="every appended event")
    per_mailbox: dict[int, list[MailboxEvent]] = defaultdict(list)
    for e in events:
        if e.user_id not in probes:  # a late probe's event
            per_mailbox[e.mailbox_id].append(e)
    for mailbox_id, evs in per_mailbox.items():
        modseqs = [e.modseq for e in evs]
        assert len(modseqs) == len(set(modseqs)), f"mailbox {mailbox_id}: a MODSEQ given twice"
        appends = sorted((e for e in evs if e.kind == "appended"), key=lambda e: e.modseq)
        uids = [u for e in appends for u in e.uids]
        assert uids == list(range(1, len(uids) + 1)), f"mailbox {mailbox_id}: UIDs out of MODSEQ order"

    # one body row per distinct body, each pointed at by its blobs row
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        bodies_n, blobs_n, dangling = conn.execute(
            sa.text(
                "SELECT (SELECT COUNT(*) FROM blob_bodies), (SELECT COUNT(*) FROM blobs),"
                " (SELECT COUNT(*) FROM blobs b LEFT JOIN blob_bodies x ON b.locator = 'pg:' || x.id WHERE x.id IS NULL)"
            )
        ).one()
    engine.dispose()
    assert blobs_n == len(wanted_keys) + APPENDS + 10 + 1  # + dora's, + the probes' body
    assert (bodies_n, dangling) == (blobs_n, 0)
    # the races (a key, a body, a lock order) were settled inside the stores: no caller saw a 503
    assert REFUSED == []
    for c in clients:
        await c.close()
    await natsconn.close(nc)
