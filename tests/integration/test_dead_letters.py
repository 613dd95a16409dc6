"""Poison messages end in DEAD, one per stage, while the rest of the mail flows; `mailflow dead` shows
them and brings them back.

The queue's intake and results workers and a delivery worker run against a real nats-server, a real
database and the real mailbox-store in this process; the queue's admin REST runs on a real socket and the CLI
talks to it. Each stage gets one message whose handling raises:
  intake   an envelope whose size no database integer column holds (a real poison: it validates); its
           job went out while its first commit ran, so it is delivered once, though never recorded
  delivery a job for poison-delivery@daum.test: test-only hook around Deliveries (below, not in the runtime)
  results  a result for poison-results@daum.test: test-only hook around the results' database (below)
Retries are quick here (the workers' backoff is set to milliseconds); the number of attempts is the real one.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from mailflow.bodies import JetStreamBodies
from mailflow.contracts import subjects
from mailflow.contracts.messages import DeadLetter, QueuedMessage, QueuedMessages, Recipient
from mailflow.contracts.streams import MAX_ATTEMPTS
from mailflow.web import HttpServer, service_app
from mailflow_delivery.routing import Deliveries
from mailflow_delivery.sentlog import KvSentLog
from mailflow_delivery.worker import DeliveryWorker
from mailflow_queue import db, dead, ledger
from mailflow_queue.db import Database, make_engine, migrate
from mailflow_queue.outbox import JetStreamOutbox
from mailflow_queue.scheduler import Scheduler
from mailflow_queue.workers import Commits, Intake, Results
from services.delivery.tests.protocol.test_routing import TableResolver
from tests.support import await_for, mailflow_cli

BODY = b"From: a@daum.test\r\nSubject: hi\r\n\r\nhello\r\n"
POISON_DELIVERY = "poison-delivery@daum.test"
POISON_RESULTS = "poison-results@daum.test"


class PoisonedDeliveries:
    """Test-only hook: delivery of a batch with POISON_DELIVERY in it raises (while `armed`)."""

    def __init__(self, real: Deliveries):
        self.real, self.armed = real, True

    async def run(self, jobs):
        if self.armed and any(j.rcpt.address == POISON_DELIVERY for j in jobs):
            raise RuntimeError("delivery cannot handle this job")
        return await self.real.run(jobs)


class PoisonedResultsDb:
    """Test-only hook: the results transaction with a result for POISON_RESULTS raises (while `armed`)."""

    def __init__(self, real: Database):
        self.real, self.armed = real, True

    async def run(self, fn, *args):
        if self.armed and fn is ledger.apply_results and any(r.rcpt == POISON_RESULTS for r in args[0]):
            raise RuntimeError("results cannot apply this one")
        return await self.real.run(fn, *args)


def envelope(qid: str, rcpt: str, size: int = len(BODY)) -> QueuedMessage:
    return QueuedMessage(
        queue_id=qid, trace_id=f"t-{qid}", mail_from="a@daum.test", rcpt_to=[Recipient(address=rcpt)],
        body_ref=f"inline:{qid}:{len(BODY)}", size=size, body=BODY, received_at=datetime.now(UTC),
    )


def states(database: Database) -> dict[str, str]:
    return database.call(lambda s: {r.queue_id: r.state for r in s.scalars(sa.select(db.Recipient))})


@pytest.fixture
async def stack(js, db_url, store):
    """The three workers running, the admin REST on a free port; yields (hooks, database, cli runner)."""
    engine = make_engine(db_url)
    migrate(engine)
    database = Database(engine)
    outbox = JetStreamOutbox(js)
    policy = ledger.Policy(jitter=0.0)
    scheduler = Scheduler(database, outbox, JetStreamBodies(js), policy, "mx.daum.test")
    for user in ("alice@daum.test", "bob@daum.test", POISON_DELIVERY, POISON_RESULTS):
        store.add_user(user, "pw")
    deliveries = PoisonedDeliveries(Deliveries(store, store, JetStreamBodies(js), TableResolver({}), await KvSentLog.open(js)))
    results_db = PoisonedResultsDb(database)
    commits = Commits(failed_ttl=0.5)  # results of the intake poison: asked for again briefly, then stale
    workers = [
        Intake(js._nc, js, database, outbox, policy, commits=commits),
        DeliveryWorker(js._nc, js, deliveries),
        Results(js._nc, js, results_db, policy, scheduler.poke, commits=commits),
    ]
    for w in workers:
        w.retry_first, w.retry_cap = 0.005, 0.02
    app = service_app("queue")
    app.include_router(dead.router(js, "adm1n"))
    http = await HttpServer(app, "127.0.0.1:0").start()
    env = {"MAILFLOW_QUEUE_URL": f"http://127.0.0.1:{http.port}", "MAILFLOW_ADMIN_TOKEN": "adm1n", "COLUMNS": "160"}
    mailflow = mailflow_cli(env)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        yield (deliveries, results_db, store), database, mailflow
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        await http.stop()
        database.close()


async def test_a_poison_message_per_stage_ends_in_dead_and_the_rest_flows(js, stack):
    (deliveries, results_db, store), database, mailflow = stack
    # traffic: 30 messages, in groups as smtp-ingress sends them, the three poisons among them
    normal = [envelope(f"QN{n:02}", "alice@daum.test") for n in range(30)]
    poisons = [envelope("QPI", "bob@daum.test", size=2**64), envelope("QPD", POISON_DELIVERY), envelope("QPR", POISON_RESULTS)]
    groups = [normal[0:5] + [poisons[0]], normal[5:10], [poisons[1]] + normal[10:20], normal[20:25] + [poisons[2]], normal[25:]]
    for n, group in enumerate(groups):
        await js.publish(subjects.MAIL_QUEUED, QueuedMessages(messages=group).to_bytes(), headers={"Nats-Msg-Id": f"g{n}"})

    async def three_letters():
        return (await js.stream_info("DEAD")).state.messages == 3

    await await_for(three_letters, timeout=60, what="three dead letters")

    async def flowed():
        s = states(database)
        return all(s.get(m.queue_id) == "delivered" for m in normal) and s

    s = await await_for(flowed, timeout=30, what="the other messages delivered")
    assert len(store.messages("alice@daum.test")) == 30
    assert len(store.messages("bob@daum.test")) == 1  # the intake poison, once
    assert "QPI" not in s and s["QPD"] == "inflight" and s["QPR"] == "inflight"

    page = json.loads(await mailflow("dead", "list", "--json"))
    assert page["total"] == 3 and page["next"] is None
    by_qid = {d["queue_ids"][0]: d for d in page["items"]}
    assert {q: (d["service"], d["subject"]) for q, d in by_qid.items()} == {
        "QPI": ("queue", subjects.MAIL_QUEUED),
        "QPD": ("delivery", subjects.DELIVERY_JOB),
        "QPR": ("queue", subjects.DELIVERY_RESULT),
    }
    for q, d in by_qid.items():  # each alone: its group mates were split off and went through
        assert d["queue_ids"] == [q] and d["reason"].startswith(f"failed {MAX_ATTEMPTS} attempts; the last: ")
        assert "(ref " in d["reason"] and "Traceback" not in d["reason"]
    assert "delivery cannot handle this job" in by_qid["QPD"]["reason"]
    assert "results cannot apply this one" in by_qid["QPR"]["reason"]
    table = await mailflow("dead", "list")
    assert "dead letters: 3" in table and "QPD" in table and "delivery cannot handle" in table

    shown = await mailflow("dead", "show", str(by_qid["QPD"]["seq"]))
    assert "reason: failed 30 attempts" in shown and "from delivery" in shown and subjects.DELIVERY_JOB in shown
    assert '"address": "poison-delivery@daum.test"' in shown and "Nats-Msg-Id: split/JOBS/" in shown
    view = json.loads(await mailflow("dead", "show", str(by_qid["QPI"]["seq"]), "--json"))
    assert view["payload"]["messages"][0]["size"] == 2**64 and view["delivered"] == MAX_ATTEMPTS

    # the causes fixed, a retry brings each back where it came from
    deliveries.armed = results_db.armed = False
    assert "published again" in await mailflow("dead", "retry", str(by_qid["QPD"]["seq"]), str(by_qid["QPR"]["seq"]))

    async def poisons_delivered():
        s = states(database)
        return s["QPD"] == "delivered" and s["QPR"] == "delivered"

    await await_for(poisons_delivered, timeout=30, what="the retried job and result")
    assert len(store.messages(POISON_DELIVERY)) == 1
    # the intake poison still is one: back in MAIL, it fails again and comes back to DEAD
    await mailflow("dead", "retry", str(by_qid["QPI"]["seq"]))

    async def back_in_dead():
        page = json.loads(await mailflow("dead", "list", "--json"))
        return len(page["items"]) == 1 and page["items"][0]["seq"] > by_qid["QPI"]["seq"] and page["items"][0]

    again = await await_for(back_in_dead, timeout=30, what="the intake poison in DEAD again")
    assert again["queue_ids"] == ["QPI"] and again["subject"] == subjects.MAIL_QUEUED
    assert "no dead letter" in await mailflow("dead", "show", str(by_qid["QPI"]["seq"]), code=1)
    assert "nothing done" in await mailflow("dead", "delete", str(again["seq"]), code=1)  # no answer is a no
    assert "deleted" in await mailflow("dead", "delete", str(again["seq"]), "--yes")
    assert json.loads(await mailflow("dead", "list", "--json"))["total"] == 0
    assert "published again: 0 letter(s)" in await mailflow("dead", "retry", "--all")
    assert "name letter numbers, or --all" in await mailflow("dead", "retry", code=2)
    assert (await js.stream_info("MAIL")).state.messages == 0
    assert (await js.stream_info("JOBS")).state.messages == 0
    assert (await js.stream_info("RESULTS")).state.messages == 0


async def test_dead_rest_pages_refuses_foreign_subjects_and_retries_all(js):
    """Pages by sequence; a letter naming a subject no worker reads is shown, never published; retry
    of all puts back every other letter; a wrong token is a 401."""
    import httpx

    app = service_app("queue")
    app.include_router(dead.router(js, "adm1n"))
    http = await HttpServer(app, "127.0.0.1:0").start()
    try:
        for n in range(5):
            letter = DeadLetter(subject=subjects.DELIVERY_RESULT, service="queue", reason=f"r{n}", payload=b"{}")
            await js.publish(subjects.MAIL_DEAD, letter.to_bytes())
        evil = DeadLetter(subject="$JS.API.STREAM.DELETE.MAIL", service="queue", reason="forged", payload=b"")
        await js.publish(subjects.MAIL_DEAD, evil.to_bytes())
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}", headers={"X-Mailflow-Admin-Token": "adm1n"}) as c:
            assert (await c.get("/dead", headers={"X-Mailflow-Admin-Token": "wrong"})).status_code == 401
            first = (await c.get("/dead", params={"limit": 2})).json()
            assert [d["seq"] for d in first["items"]] == [1, 2] and first["total"] == 6 and first["next"] == 2
            rest = (await c.get("/dead", params={"after": first["next"], "limit": 10})).json()
            assert [d["seq"] for d in rest["items"]] == [3, 4, 5, 6] and rest["next"] is None
            assert (await c.get("/dead/99")).status_code == 404
            assert (await c.post("/dead/6/retry")).status_code == 409
            assert (await c.delete("/dead/1")).status_code == 204
            assert (await c.delete("/dead/1")).status_code == 404
            assert (await c.post("/dead/retry")).json() == {"count": 4, "seqs": [2, 3, 4, 5]}
            assert [d["seq"] for d in (await c.get("/dead")).json()["items"]] == [6]
        assert (await js.stream_info("MAIL")).state.messages == 0  # the forged subject was never published to
        assert (await js.stream_info("RESULTS")).state.messages == 4
    finally:
        await http.stop()
