"""The queue's parts on a real nats-server and a real database (SQLite, and PostgreSQL when set)."""

from __future__ import annotations

import pytest

from mailflow.bodies import JetStreamBodies
from mailflow_queue import ledger
from mailflow_queue.db import Database, make_engine, migrate
from mailflow_queue.outbox import JetStreamOutbox
from mailflow_queue.scheduler import Scheduler
from mailflow_queue.workers import Commits, Intake, Results


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Parts:
    def __init__(self, js, db_url: str):
        self.js, self.nc = js, js._nc
        self.clock = Clock()
        engine = make_engine(db_url)
        migrate(engine)
        migrate(engine)  # a second run is a no-op
        self.db = Database(engine)
        self.bodies = JetStreamBodies(js)
        self.outbox = JetStreamOutbox(js)
        self.policy = ledger.Policy(jitter=0.0, delay_notice_s=4 * 3600, max_lifetime_s=5 * 86400)
        self.scheduler = Scheduler(self.db, self.outbox, self.bodies, self.policy, "mx.daum.test", clock=self.clock)
        commits = Commits()
        self.intake = Intake(self.nc, js, self.db, self.outbox, self.policy, clock=self.clock, commits=commits)
        self.results = Results(self.nc, js, self.db, self.policy, self.scheduler.poke, clock=self.clock, commits=commits)
        self._jobs = None

    async def jobs(self, expect: int | None = None, messages: list | None = None):
        """Jobs waiting in JOBS, taken with the delivery consumer (and acknowledged): (job, Nats-Msg-Id of
        the message that carried it). `messages` collects the messages' DeliveryJobs."""
        from mailflow.contracts.messages import DeliveryJobs

        if self._jobs is None:
            self._jobs = await self.js.pull_subscribe_bind(durable="delivery", stream="JOBS")
        out = []
        try:
            while True:
                batch = await self._jobs.fetch(100, timeout=0.5)
                for m in batch:
                    await m.ack()
                    jobs = DeliveryJobs.from_bytes(m.data)
                    out += [(job, m.headers.get("Nats-Msg-Id")) for job in jobs.jobs]
                    if messages is not None:
                        messages.append(jobs)
        except TimeoutError:
            pass
        if expect is not None:
            assert len(out) == expect, out
        return out


@pytest.fixture
async def parts(js, db_url):
    p = Parts(js, db_url)
    yield p
    p.db.close()
