"""The queue's JetStream consumers: intake (MAIL -> database -> JOBS) and results (RESULTS -> states).

Intake acknowledges a batch of accepted messages only after their rows are committed and every job
is acknowledged by JetStream; if either fails, the batch is nak'ed and comes again (recording is
idempotent on the queue id, and a message recorded before returns its in-flight jobs to publish
again). Results are acknowledged after their transaction commits; applying an answer twice changes
nothing (a final recipient stays final). Results come one per message (delivery.result, from a
delivery that predates batches) or a delivery batch's results in one message (delivery.result.v2);
both are applied the same way. DSNs and body deletion follow in `Scheduler.finish`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from mailflow import log as mlog
from mailflow.contracts.messages import (
    DeliveryResult,
    DeliveryResults,
    QueuedMessage,
    QueuedMessages,
    TraceEvent,
)
from mailflow.contracts.streams import QUEUE_INTAKE_BATCHES, queue_batches_consumer
from mailflow.quickstop import QuickStop
from mailflow.worker import Done, Outcome, Retry, Worker, backoff, carried
from mailflow_queue import ledger, metrics
from mailflow_queue.db import Database
from mailflow_queue.outbox import Outbox

log = logging.getLogger(__name__)

UNKNOWN_TRIES = 40  # x 50 ms: how long a result may wait for its message's intake commit


class Intake(QuickStop, Worker[QueuedMessage]):
    stream, durable, model = "MAIL", "queue", QueuedMessage

    def __init__(self, nc, js, db: Database, outbox: Outbox, policy: ledger.Policy, clock: Callable[[], float] = time.time, batch: int = 256):
        super().__init__(nc, js, "queue")
        self.db, self.outbox, self.policy, self.clock = db, outbox, policy, clock
        self.batch = batch

    async def handle_batch(self, items: list[tuple[QueuedMessage, int]]) -> list[Outcome]:
        """A message seen for the first time has its jobs published at once, built from its envelope,
        while its rows are committed; the batch is acknowledged when both are durable. A redelivered
        message (after a crash) waits for the database to say which of its jobs are still due."""
        started = time.perf_counter()
        msgs = [m for m, _ in items]
        by_id = {m.queue_id: m for m in msgs}
        fresh = {m.queue_id: m for m, delivered in items if delivered == 1}

        def traces(qids) -> list[TraceEvent]:
            took = (time.perf_counter() - started) * 1000
            return [
                TraceEvent(
                    queue_id=q,
                    trace_id=by_id[q].trace_id,
                    step="queue",
                    service="queue",
                    duration_ms=took,
                    detail=f"recorded, {len(by_id[q].rcpt_to)} recipient(s)",
                )
                for q in qids
            ]

        commit = asyncio.ensure_future(self.db.run(ledger.record, msgs, self.clock(), self.policy))
        early = asyncio.ensure_future(self.outbox.publish(ledger.first_jobs(list(fresh.values())))) if fresh else None
        try:
            rec = await commit  # raises if the transaction failed
            if early is not None:
                await early
            # jobs of messages known before (only those still in flight), and one trace per new message
            await self.outbox.publish([j for j in rec.jobs if j.queue_id not in fresh], traces(rec.new))
        except Exception:
            log.exception("intake batch failed; will retry", extra={"messages": len(items)})
            for task in (commit, early):
                if task is not None and not task.done():
                    task.cancel()
            return [Retry(backoff(a)) for _, a in items]
        metrics.MESSAGES.labels("recorded").inc(len(rec.new))
        metrics.MESSAGES.labels("duplicate").inc(len(rec.duplicates))
        metrics.JOBS.labels("first").inc(len(rec.jobs))
        metrics.BATCH_SECONDS.labels("intake").observe(time.perf_counter() - started)
        for q in rec.new:
            m = by_id[q]
            with mlog.context(queue_id=q, trace_id=m.trace_id):
                log.info("queued", extra={"from": m.mail_from, "nrcpt": len(m.rcpt_to), "size": m.size})
        return [Done() for _ in items]


class IntakeBatches(Intake):
    """mail.queued.v2: each message holds envelopes smtp-ingress accepted together (`QueuedMessages`).
    The envelopes of all messages fetched together are recorded in one transaction, as Intake does;
    every message is acknowledged once all are durable, or all come again. Binding creates the
    consumer: its activity tells smtp-ingress to send groups."""

    durable, model = QUEUE_INTAKE_BATCHES[1], QueuedMessages
    own_consumer = staticmethod(queue_batches_consumer)

    async def handle_batch(self, items: list[tuple[QueuedMessages, int]]) -> list[Outcome]:
        return await carried(items, lambda g: g.messages, super().handle_batch)


class Results(QuickStop, Worker[DeliveryResult]):
    stream, durable, model = "RESULTS", "queue-results", DeliveryResult
    linger = 0.05  # results are off the latency path: gather them into fewer transactions

    def __init__(
        self,
        nc,
        js,
        db: Database,
        policy: ledger.Policy,
        on_change: Callable[[], None],
        clock: Callable[[], float] = time.time,
        batch: int = 256,
        unknown_tries: int = UNKNOWN_TRIES,
    ):
        super().__init__(nc, js, "queue")
        self.db, self.policy, self.clock, self.on_change = db, policy, clock, on_change
        self.batch, self.unknown_tries = batch, unknown_tries

    async def handle_batch(self, items: list[tuple[DeliveryResult, int]]) -> list[Outcome]:
        return await self.apply(items)

    async def apply(self, items: list[tuple[DeliveryResult, int]]) -> list[Outcome]:
        """Each (result, deliveries of the message that carried it) -> its outcome, in one transaction."""
        started = time.perf_counter()
        results = [r for r, _ in items]
        try:
            applied = await self.db.run(ledger.apply_results, results, self.clock(), self.policy)
        except Exception:
            log.exception("results batch failed; will retry", extra={"results": len(items)})
            return [Retry(backoff(a)) for _, a in items]
        for outcome, n in applied.counts.items():
            metrics.RESULTS.labels(outcome).inc(n)
        metrics.BATCH_SECONDS.labels("results").observe(time.perf_counter() - started)
        unknown = set(applied.unknown)
        for n, r in enumerate(results):
            if n not in unknown:
                with mlog.context(queue_id=r.queue_id, trace_id=r.trace_id or None):
                    log.info(r.outcome, extra={"rcpt": r.rcpt, "status": r.status, "attempt": r.attempt})
        if applied.notices:  # DSNs go out at once; finished bodies wait for the next regular tick
            self.on_change()
        # A result may overtake the commit of its message (intake publishes jobs while committing):
        # ask for it again shortly; after UNKNOWN_TRIES deliveries the message is taken as deleted.
        out: list[Outcome] = []
        for n, (_, delivered) in enumerate(items):
            if n in unknown and delivered < self.unknown_tries:
                out.append(Retry(0.05))
            else:
                if n in unknown:
                    metrics.RESULTS.labels("stale").inc()
                out.append(Done())
        return out


class ResultBatches(Results):
    """delivery.result.v2: each message holds a delivery batch's results. The results of all messages
    fetched together are applied in one transaction. A message with a result whose queue message is not
    recorded yet is asked for again whole (its other results, applied again, change nothing)."""

    durable, model = "queue-result-batches", DeliveryResults
    batch = 16  # messages per fetch, each with up to a delivery batch of results

    async def handle_batch(self, items: list[tuple[DeliveryResults, int]]) -> list[Outcome]:
        return await carried(items, lambda b: b.results, self.apply)


async def run_all(workers: list[Worker], stop: asyncio.Event) -> None:
    await asyncio.gather(*(w.run(stop) for w in workers))
