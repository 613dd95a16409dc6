"""The queue's JetStream consumers: intake (MAIL -> database -> JOBS) and results (RESULTS -> states).

Intake takes envelope groups (`QueuedMessages` on mail.queued) and records the envelopes of every
group fetched together in one transaction; only once it is committed are their jobs published (so a
result can never arrive for a message the database does not know), and only once JetStream has
acknowledged every job are the groups acknowledged. If either fails, the exception goes to the worker
base: each group is tried again alone, a group that still fails is split into groups of one envelope,
nak'ed (recording is idempotent on the queue id, and a message recorded before returns its in-flight
jobs to publish again), and an envelope that keeps failing ends in DEAD alone. Results come a delivery batch to a message (`DeliveryResults` on delivery.result) and are
acknowledged after their transaction commits (failures: as for intake); applying an answer twice
changes nothing (a final recipient stays final). DSNs and body deletion follow in `Scheduler.finish`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mailflow import log as mlog
from mailflow.contracts import streams
from mailflow.contracts.messages import DeliveryResults, QueuedMessages, TraceEvent
from mailflow.quickstop import QuickStop
from mailflow.worker import Done, Outcome, Worker
from mailflow_queue import ledger, metrics
from mailflow_queue.db import Database
from mailflow_queue.outbox import Outbox

log = logging.getLogger(__name__)


class Intake(QuickStop, Worker[QueuedMessages]):
    stream, durable = streams.QUEUE_INTAKE
    model, items = QueuedMessages, "messages"

    def __init__(self, nc, js, db: Database, outbox: Outbox, policy: ledger.Policy, clock: Callable[[], float] = time.time, batch: int = 32):
        super().__init__(nc, js, "queue")
        self.db, self.outbox, self.policy, self.clock = db, outbox, policy, clock
        self.batch = batch  # groups per fetch; under load a group holds several envelopes

    async def handle_batch(self, items: list[tuple[QueuedMessages, int]]) -> list[Outcome]:
        started = time.perf_counter()
        msgs = [m for group, _ in items for m in group.messages]
        rec = await self.db.run(ledger.record, msgs, self.clock(), self.policy)
        by_id = {m.queue_id: m for m in msgs}
        took = (time.perf_counter() - started) * 1000
        traces = [
            TraceEvent(
                queue_id=q,
                trace_id=by_id[q].trace_id,
                step="queue",
                service="queue",
                duration_ms=took,
                detail=f"recorded, {len(by_id[q].rcpt_to)} recipient(s)",
            )
            for q in rec.new
        ]
        await self.outbox.publish(rec.jobs, traces)
        metrics.MESSAGES.labels("recorded").inc(len(rec.new))
        metrics.MESSAGES.labels("duplicate").inc(len(rec.duplicates))
        metrics.JOBS.labels("first").inc(len(rec.jobs))
        metrics.BATCH_SECONDS.labels("intake").observe(time.perf_counter() - started)
        for q in rec.new:
            m = by_id[q]
            with mlog.context(queue_id=q, trace_id=m.trace_id):
                log.info("queued", extra={"from": m.mail_from, "nrcpt": len(m.rcpt_to), "size": m.size})
        return [Done() for _ in items]


class Results(QuickStop, Worker[DeliveryResults]):
    stream, durable = streams.QUEUE_RESULTS
    model, items = DeliveryResults, "results"
    linger = 0.05  # results are off the latency path: gather them into fewer transactions

    def __init__(
        self,
        nc,
        js,
        db: Database,
        policy: ledger.Policy,
        on_change: Callable[[], None],
        clock: Callable[[], float] = time.time,
        batch: int = 16,
    ):
        super().__init__(nc, js, "queue")
        self.db, self.policy, self.clock, self.on_change = db, policy, clock, on_change
        self.batch = batch  # messages per fetch, each with up to a delivery batch of results

    async def handle_batch(self, items: list[tuple[DeliveryResults, int]]) -> list[Outcome]:
        """The results of every message fetched together, in one transaction."""
        started = time.perf_counter()
        results = [r for batch, _ in items for r in batch.results]
        applied = await self.db.run(ledger.apply_results, results, self.clock(), self.policy)
        for outcome, n in applied.counts.items():
            metrics.RESULTS.labels(outcome).inc(n)
        metrics.BATCH_SECONDS.labels("results").observe(time.perf_counter() - started)
        stale = set(applied.stale)
        for n, r in enumerate(results):
            if n not in stale:
                with mlog.context(queue_id=r.queue_id, trace_id=r.trace_id or None):
                    log.info(r.outcome, extra={"rcpt": r.rcpt, "status": r.status, "attempt": r.attempt})
        if applied.notices:  # DSNs go out at once; finished bodies wait for the next regular tick
            self.on_change()
        return [Done() for _ in items]

