"""Several queue processes on one PostgreSQL database and one nats-server (issue 16 item 2): they share
intake and results; one runs the scheduler, and when it is killed another takes over within seconds;
a paused one that wakes up after losing the lease publishes nothing; every retry job and every DSN
is published once.

The test listens on the subjects with plain (core) NATS subscriptions, so it sees every publish, even
one JetStream would drop as a duplicate (Nats-Msg-Id): "once" here is at the source, not thanks to the
backstop. It plays smtp-ingress (envelopes on mail.queued) and delivery (results on delivery.result).
The queue processes are `queue_process.py` (python -m mailflow_queue with the seams it describes).
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from mailflow import natsconn
from mailflow.bodies import inline_ref
from mailflow.contracts import subjects
from mailflow.contracts.messages import (
    DeliveryJobs,
    DeliveryResult,
    DeliveryResults,
    QueuedMessage,
    QueuedMessages,
    Recipient,
)
from mailflow.natsserver import die_with_parent
from mailflow_queue import db
from mailflow_queue.db import make_engine, migrate
from mailflow_queue.lease import DbLease, LeaseLost, Term
from tests.support import await_for, free_port

HERE = Path(__file__).parent
ADMIN = "adm1n"
BODY = b"From: a@daum.test\r\nTo: z@naver.test\r\nSubject: hello\r\n\r\nHi.\r\n"



@pytest.fixture
def database(pg_url):
    """The test's own look at the queue database."""
    engine = sa.create_engine(pg_url)
    yield engine
    engine.dispose()


# --- queue processes ----------------------------------------------------------------------------


class Queue:
    """One queue process (its own process group), its HTTP port and log."""

    def __init__(self, tmp: Path, name: str, nats_url: str, db_url: str, env: dict[str, str]):
        self.name, self.port, self.log = name, free_port(), tmp / f"{name}.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
        environ.update(
            MAILFLOW_NATS_URL=nats_url,
            MAILFLOW_QUEUE_DATABASE_URL=db_url,
            MAILFLOW_QUEUE_HTTP_LISTEN=f"127.0.0.1:{self.port}",
            MAILFLOW_ADMIN_TOKEN=ADMIN,
            MAILFLOW_SERVICE_TOKEN="s3cret",
            MAILFLOW_HOSTNAME="mx.daum.test",
            MAILFLOW_QUEUE_SCAN_INTERVAL_S="0.2",
            MAILFLOW_QUEUE_RETRY_JITTER="0",
            MAILFLOW_QUEUE_FIRST_RETRY_S="3600",  # retries come when the test flushes the queue
            MAILFLOW_QUEUE_TLS_REPORTS="false",
            **env,
        )
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, str(HERE / "queue_process.py")],
                env=environ,
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stopped(self) -> bool:
        """Stopped by a signal (state T), as SIGSTOP leaves it."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "T"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def flush(self) -> int:
        r = httpx.post(f"http://127.0.0.1:{self.port}/queue/flush", headers={"X-Mailflow-Admin-Token": ADMIN}, timeout=10)
        r.raise_for_status()
        return r.json()["count"]

    def end(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@pytest.fixture
def queues(tmp_path, nats_url, pg_url):
    """`start(name, **env)`: a queue process on the test's nats-server and PostgreSQL schema; all ended afterwards."""
    started: list[Queue] = []

    def start(name: str, **env: str) -> Queue:
        q = Queue(tmp_path, name, nats_url, pg_url, env)
        started.append(q)
        return q

    yield start
    for q in started:
        q.end()


async def eventually(pred, timeout: float = 20.0, what: str = ""):
    """await_for with a plain predicate (processes, files, the database)."""

    async def check():
        return pred()

    return await await_for(check, timeout, what=what)


def holder(database) -> int | None:
    """The pid of the queue process holding the scheduler lease (unexpired), or None."""
    with database.connect() as conn:
        row = conn.execute(sa.text("SELECT holder FROM scheduler_lease WHERE expires_at > clock_timestamp()")).first()
    return int(row[0].split("/")[1]) if row else None


# --- what the test sees on NATS ------------------------------------------------------------------


class Watch:
    """Every publish of a delivery job and of a DSN, counted, with when each was first seen."""

    def __init__(self) -> None:
        self.jobs: Counter[tuple[str, str, int]] = Counter()
        self.first: dict[tuple[str, str, int], float] = {}
        self.dsns: Counter[str] = Counter()

    async def start(self, nc) -> None:
        await nc.subscribe(subjects.DELIVERY_JOB, cb=self._job)
        await nc.subscribe(subjects.MAIL_QUEUED, cb=self._mail)
        await nc.flush()

    async def _job(self, msg) -> None:
        for j in DeliveryJobs.from_bytes(msg.data).jobs:
            key = (j.queue_id, j.rcpt.address, j.attempt)
            self.jobs[key] += 1
            self.first.setdefault(key, time.monotonic())

    async def _mail(self, msg) -> None:
        for m in QueuedMessages.from_bytes(msg.data).messages:
            if m.mail_from == "":
                self.dsns[m.queue_id] += 1

    def attempt(self, n: int) -> dict[tuple[str, str, int], int]:
        """The jobs of attempt n of the test's own messages (not of DSNs), with how often each was published."""
        return {k: c for k, c in self.jobs.items() if k[2] == n and k[0].startswith("R")}


@pytest.fixture
async def nats(nats_url):
    nc = await natsconn.connect(nats_url, "test")
    watch = Watch()
    await watch.start(nc)
    yield nc.jetstream(), watch
    await natsconn.close(nc)


async def submit(js, n: int) -> list[QueuedMessage]:
    msgs = [
        QueuedMessage(
            queue_id=f"R{k:03}",
            trace_id=f"t{k}",
            mail_from="a@daum.test",
            rcpt_to=[Recipient(address=f"u{k}a@naver.test"), Recipient(address=f"u{k}b@naver.test")],
            body_ref=inline_ref(f"R{k:03}", len(BODY)),
            size=len(BODY),
            body=BODY,
        )
        for k in range(n)
    ]
    for m in msgs:
        await js.publish(subjects.MAIL_QUEUED, QueuedMessages(messages=[m]).to_bytes(), headers={"Nats-Msg-Id": m.queue_id})
    return msgs


async def answer(js, msgs: list[QueuedMessage], attempt: int, outcome: str, status: str) -> None:
    """Delivery's answer for every recipient of every message: one DeliveryResults per message."""
    for m in msgs:
        results = [
            DeliveryResult(queue_id=m.queue_id, rcpt=r.address, attempt=attempt, outcome=outcome, status=status, at=datetime.now(UTC))
            for r in m.rcpt_to
        ]
        await js.publish(subjects.DELIVERY_RESULT, DeliveryResults(results=results).to_bytes())


def states(database) -> Counter[str]:
    with database.connect() as conn:
        return Counter(dict(conn.execute(sa.text("SELECT state, count(*) FROM recipients GROUP BY state")).all()))


def notices(database) -> tuple[int, int]:
    """(notices made, of which sent)."""
    with database.connect() as conn:
        made, sent = conn.execute(sa.text("SELECT count(*), count(*) FILTER (WHERE sent) FROM notices")).one()
    return made, sent


def once(counts: dict, expect: int) -> bool:
    assert all(c == 1 for c in counts.values()), {k: c for k, c in counts.items() if c != 1}
    return len(counts) == expect


# --- the tests ------------------------------------------------------------------------------------


async def test_the_lease_has_one_holder_fences_the_old_term_and_hands_over(pg_url):
    engine = make_engine(pg_url)
    migrate(engine)
    a, b = DbLease(engine, "host/1/a", ttl_s=1.5, renew_s=0.5), DbLease(engine, "host/2/b", ttl_s=1.5, renew_s=0.5)
    with pytest.raises(ValueError, match="outlast two renewals"):
        DbLease(engine, "host/3/c", ttl_s=2.0, renew_s=1.0)
    try:
        renewed = time.monotonic()
        await a.renew()
        term = a.term()
        assert term is not None and a.holds(term)
        await b.renew()
        assert b.term() is None  # a holds it
        with db.Session(engine) as s, s.begin():
            a.fence(s, term)
            with pytest.raises(LeaseLost):
                a.fence(s, Term(term.token + 1))  # not a term a has
        # a renews no more (a crash): b takes the lease once it has expired, when a's term is over already

        async def b_holds():
            await b.renew()
            return b.term()

        taken = await await_for(b_holds, timeout=5, interval=0.05, what="b taking the expired lease")
        assert time.monotonic() - renewed >= 1.5 and not a.holds(term)
        assert taken.token == term.token + 1
        with db.Session(engine) as s, s.begin(), pytest.raises(LeaseLost):
            a.fence(s, term)  # a woken up: its old term decides nothing
        await a.renew()
        assert a.term() is None
        # a clean stop gives the lease up at once
        stop = asyncio.Event()
        running = asyncio.create_task(b.run(stop))
        stop.set()
        await running
        await a.renew()
        assert a.term() is not None and a.term().token == term.token + 2
    finally:
        engine.dispose()


async def test_two_queues_share_the_work_and_a_killed_scheduler_is_replaced_within_seconds(queues, nats, database, capsys):
    js, watch = nats
    a, b = queues("a"), queues("b")  # they migrate together: one after the other
    await eventually(lambda: a.ready() and b.ready(), timeout=60, what="both queues ready")
    lead = await eventually(lambda: holder(database), what="a scheduler")
    assert lead in (a.pid, b.pid)
    msgs = await submit(js, 40)
    await eventually(lambda: once(watch.attempt(1), 80), what="80 first jobs")
    await answer(js, msgs, 1, "deferred", "4.4.1")
    await eventually(lambda: states(database)["deferred"] == 80, what="80 recipients deferred")
    standby = b if lead == a.pid else a
    assert standby.flush() == 80  # any replica's admin REST; the scheduler's holder sends the retries
    await eventually(lambda: once(watch.attempt(2), 80), what="80 retries")

    takeovers = []
    live = {a.pid: a, b.pid: b}
    for attempt in (2, 3, 4):
        await answer(js, msgs, attempt, "deferred", "4.4.1")
        await eventually(lambda: states(database)["deferred"] == 80, what="80 recipients deferred")
        lead = holder(database)
        leader, survivor = live.pop(lead), next(iter(live.values()))
        killed = time.monotonic()
        leader.popen.send_signal(signal.SIGKILL)
        assert survivor.flush() == 80  # due at once: they go out as soon as the survivor runs the scheduler
        await eventually(lambda n=attempt + 1: once(watch.attempt(n), 80), what=f"80 retries of attempt {attempt + 1}")
        seen = [t for k, t in watch.first.items() if k[2] == attempt + 1 and k[0].startswith("R")]
        takeovers.append((min(seen) - killed, max(seen) - killed))
        assert holder(database) == survivor.pid
        replacement = queues(f"r{attempt}")  # the killed one restarted: a standby now
        await eventually(replacement.ready, timeout=60, what="the replacement ready")
        live[replacement.pid] = replacement
    # the retries were published and PubAck'ed: nothing is left claimed to go out again
    with database.connect() as conn:
        soonest = conn.execute(sa.text("SELECT min(next_attempt_at) FROM recipients WHERE state = 'inflight'")).scalar()
    assert soonest > time.time() + 600

    await answer(js, msgs, 5, "bounced", "5.1.1")

    def dsns_out():
        made, sent = notices(database)
        return made and made == sent and once(watch.dsns, made) and made

    made = await eventually(dsns_out, what="every DSN sent")
    assert 40 <= made <= 80  # one per message, or per recipient when its results came apart

    def recorded():
        with database.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM messages WHERE mail_from = ''")).scalar()

    await eventually(lambda: recorded() == made, what="each DSN recorded by intake as a message")
    with capsys.disabled():
        first = [t[0] for t in takeovers]
        print(
            "\nscheduler takeover after kill -9 (first retry out, all 80 out): "
            + ", ".join(f"{f:.2f}/{last:.2f} s" for f, last in takeovers)
            + f"; median first {statistics.median(first):.2f} s"
        )
    assert max(t[0] for t in takeovers) < 6.0  # lease 3 s + one renewal 1 s + a pass, with room for a busy machine


@pytest.mark.parametrize("work", ["retries", "dsns"])
async def test_a_paused_scheduler_publishes_nothing_after_its_lease_is_taken(queues, nats, database, work, capsys):
    js, watch = nats
    a = queues("a", MAILFLOW_TEST_PAUSE_AT_ACT="1", MAILFLOW_TEST_CLAIM_S="4")
    await eventually(a.ready, timeout=60, what="a ready")
    await eventually(lambda: holder(database) == a.pid, what="a runs the scheduler")
    b = queues("b", MAILFLOW_TEST_CLAIM_S="4")
    await eventually(b.ready, timeout=60, what="b ready")
    msgs = await submit(js, 10)
    await eventually(lambda: once(watch.attempt(1), 20), what="20 first jobs")
    if work == "retries":
        await answer(js, msgs, 1, "deferred", "4.4.1")
        await eventually(lambda: states(database)["deferred"] == 20, what="20 recipients deferred")
        assert b.flush() == 20  # a claims them, then stops itself before its lease check
    else:
        await answer(js, msgs, 1, "bounced", "5.1.1")  # a reads the DSNs to send, then stops itself
    await eventually(a.stopped, what="a paused with the work in hand")
    paused = time.monotonic()
    await eventually(lambda: holder(database) == b.pid, what="b takes the lease")
    took = time.monotonic() - paused
    if work == "retries":  # b sends them once a's claim lapses
        await eventually(lambda: once(watch.attempt(2), 20), what="20 retries")
    else:

        def dsns_out():
            made, sent = notices(database)
            return made and made == sent and once(watch.dsns, made)

        await eventually(dsns_out, what="the DSNs sent")
    os.kill(a.pid, signal.SIGCONT)
    await eventually(lambda: "scheduler pass stopped" in a.text(), what="a, woken up, giving up its pass")
    assert once(watch.attempt(2), 20 if work == "retries" else 0)
    assert all(c == 1 for c in watch.dsns.values())
    assert a.popen.poll() is None and holder(database) == b.pid
    with capsys.disabled():
        print(f"\nscheduler takeover from a paused holder ({work}): {took:.2f} s")
