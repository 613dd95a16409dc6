"""The queue's JetStream consumers: intake (MAIL -> database -> JOBS) and results (RESULTS -> states).

Intake takes envelope groups (`QueuedMessages` on mail.queued) and records the envelopes of every
group fetched together in one transaction. A message seen for the first time has its jobs published
at once, built from its envelope, while the transaction commits (two fsyncs side by side, not one
after the other, on the way to the mailbox); the groups are acknowledged when both are durable.
Results may thus arrive before their message's commit ends. In the process that runs the commit,
`Commits` makes them wait for it; in another queue process (replicas share the durable consumers), or
after the commit failed, the first attempt's result finds no message and comes again a little later
(`ledger.NotRecorded`), so the order never matters. A redelivered message waits for the database to
say which of its jobs are still in flight (a message whose commit failed in another replica has its
first jobs published again: the same Nats-Msg-Ids, and delivery is idempotent).
A failure goes to the worker base: each group is tried again alone, a group that still fails is
split into groups of one envelope, nak'ed (recording is idempotent on the queue id, and a message
recorded before returns its in-flight jobs to publish again), and an envelope that keeps failing ends
in DEAD alone. Results come a delivery batch to a message (`DeliveryResults` on delivery.result) and
are acknowledged after their transaction commits (failures: as for intake); applying an answer
twice changes nothing (a final recipient stays final). DSNs and body deletion follow in
`Scheduler.finish`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from mailflow import log as mlog
from mailflow.contracts import streams
from mailflow.contracts.messages import DeliveryResults, QueuedMessages, TraceEvent
from mailflow.quickstop import QuickStop
from mailflow.worker import Done, Outcome, Retry, Worker, backoff
from mailflow_queue import ledger, metrics
from mailflow_queue.db import Database
from mailflow_queue.outbox import Outbox

log = logging.getLogger(__name__)


class Commits:
    """New messages whose jobs go out while their intake transaction runs in this process. Intake
    registers them before it publishes their jobs, so a result handled here for such a message waits
    for its commit instead of coming again later.
    A failed commit is remembered for `failed_ttl` seconds: intake, trying the message again, neither
    publishes its jobs again nor after the commit (the same attempt-1 jobs are in JOBS already); its
    results come again later meanwhile (ledger.NotRecorded, for as long: `failed_ttl` is also the
    results' `unrecorded_s`). A message that can never be recorded ends in DEAD; its results are stale
    after the ttl."""

    def __init__(self, failed_ttl: float = 120.0, failed_kept: int = 100_000):
        self.failed_ttl, self.failed_kept = failed_ttl, failed_kept
        self._running: dict[str, asyncio.Future[bool]] = {}
        self._failed: dict[str, float] = {}  # queue id -> until when; insertion-ordered, oldest first

    def begin(self, qids: Iterable[str]) -> asyncio.Future[bool]:
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        for q in qids:
            self._running[q] = fut
        return fut

    def end(self, fut: asyncio.Future[bool], qids: Iterable[str], committed: bool, jobs_out: bool = True) -> None:
        """The transaction ended; if it failed, whether all the jobs had gone out."""
        fut.set_result(committed)
        until = time.monotonic() + self.failed_ttl
        for q in qids:
            if self._running.get(q) is fut:
                del self._running[q]
                if not committed and jobs_out:
                    self._failed[q] = until
        while len(self._failed) > self.failed_kept:
            del self._failed[next(iter(self._failed))]

    def jobs_out(self, qid: str) -> bool:
        """Its attempt-1 jobs went out, but its commit failed (lately): it is not recorded yet."""
        return self._failed.get(qid, 0.0) > time.monotonic()

    def recorded(self, qids: Iterable[str]) -> None:
        if self._failed:
            for q in qids:
                self._failed.pop(q, None)

    async def wait(self, qids: Iterable[str]) -> int:
        """Wait for the commits of these queue ids still running here; how many ids waited."""
        running = {q: f for q in set(qids) if (f := self._running.get(q)) is not None}
        for fut in set(running.values()):
            await asyncio.shield(fut)
        return len(running)


class Intake(QuickStop, Worker[QueuedMessages]):
    stream, durable = streams.QUEUE_INTAKE
    model, items = QueuedMessages, "messages"

    def __init__(
        self,
        nc,
        js,
        db: Database,
        outbox: Outbox,
        policy: ledger.Policy,
        clock: Callable[[], float] = time.time,
        batch: int = 32,
        commits: Commits | None = None,
    ):
        super().__init__(nc, js, "queue")
        self.db, self.outbox, self.policy, self.clock = db, outbox, policy, clock
        self.batch = batch  # groups per fetch; under load a group holds several envelopes
        self.commits = commits or Commits()

    async def handle_batch(self, items: list[tuple[QueuedMessages, int]]) -> list[Outcome]:
        started = time.perf_counter()
        now = self.clock()
        msgs = [m for group, _ in items for m in group.messages]
        out = {m.queue_id for m in msgs if self.commits.jobs_out(m.queue_id)}  # a failed commit's jobs
        fresh = [m for group, delivered in items if delivered == 1 for m in group.messages if m.queue_id not in out]
        early = {m.queue_id for m in fresh}
        running = self.commits.begin(early)  # before any of their jobs can be out
        publish = asyncio.ensure_future(self.outbox.publish(ledger.first_jobs(fresh, now, self.policy))) if fresh else None
        try:
            rec = await self.db.run(ledger.record, msgs, now, self.policy)
        except BaseException:
            published = publish is not None and await self._done(publish)
            self.commits.end(running, early, committed=False, jobs_out=published)
            raise
        self.commits.end(running, early, committed=True)
        self.commits.recorded(rec.new + rec.duplicates)  # a failed commit of theirs is forgotten
        if publish is not None:
            await publish
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
        # jobs not out yet (of messages known before, or redelivered), and one trace per new message
        await self.outbox.publish([j for j in rec.jobs if j.queue_id not in early and j.queue_id not in out], traces)
        metrics.MESSAGES.labels("recorded").inc(len(rec.new))
        metrics.MESSAGES.labels("duplicate").inc(len(rec.duplicates))
        metrics.JOBS.labels("first").inc(len(rec.jobs))
        metrics.BATCH_SECONDS.labels("intake").observe(time.perf_counter() - started)
        for q in rec.new:
            m = by_id[q]
            with mlog.context(queue_id=q, trace_id=m.trace_id):
                log.info("queued", extra={"from": m.mail_from, "nrcpt": len(m.rcpt_to), "size": m.size})
        return [Done() for _ in items]

    @staticmethod
    async def _done(publish: asyncio.Future) -> bool:
        """Whether the early publish succeeded (its jobs are out), once it ended."""
        try:
            await publish
            return True
        except Exception:
            return False


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
        commits: Commits | None = None,
    ):
        super().__init__(nc, js, "queue")
        self.db, self.policy, self.clock, self.on_change = db, policy, clock, on_change
        self.batch = batch  # messages per fetch, each with up to a delivery batch of results
        self.commits = commits or Commits()

    async def handle_batch(self, items: list[tuple[DeliveryResults, int]]) -> list[Outcome]:
        """The results of every message fetched together, in one transaction, once the intake
        transactions of their messages still running have committed."""
        started = time.perf_counter()
        results = [r for batch, _ in items for r in batch.results]
        early = await self.commits.wait({r.queue_id for r in results})
        try:
            applied = await self.db.run(ledger.apply_results, results, self.clock(), self.policy, self.commits.failed_ttl)
        except ledger.NotRecorded as exc:
            if len(items) > 1:
                raise  # the worker tries each message alone: the others are applied now
            return [Retry(backoff(items[0][1], self.retry_first, self.retry_cap), str(exc))]
        if early:
            metrics.RESULTS.labels("early").inc(early)
        for outcome, n in applied.counts.items():
            metrics.RESULTS.labels(outcome).inc(n)
        if applied.tls_sessions:
            metrics.TLS_SESSIONS.inc(applied.tls_sessions)
        for seconds in applied.latencies:
            metrics.DELIVERY_LATENCY.observe(seconds)
        metrics.BATCH_SECONDS.labels("results").observe(time.perf_counter() - started)
        stale = set(applied.stale)
        for n, r in enumerate(results):
            if n not in stale:
                with mlog.context(queue_id=r.queue_id, trace_id=r.trace_id or None):
                    log.info(r.outcome, extra={"rcpt": r.rcpt, "status": r.status, "attempt": r.attempt})
        if applied.notices:  # DSNs go out at once; finished bodies wait for the next regular tick
            self.on_change()
        return [Done() for _ in items]
