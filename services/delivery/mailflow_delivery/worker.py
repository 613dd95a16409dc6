"""The loop: fetch a batch of jobs -> deliver -> publish one result per job -> ack.

A job is acknowledged only after its result is acknowledged by JetStream. If anything fails before
that (NATS away, an unexpected error), the whole batch is nak'ed and comes again; delivering it again
is harmless (the store keeps one copy per idempotency key, the sent log stops a second SMTP send).
Trace events are best effort: losing one never holds up mail.
"""

from __future__ import annotations

import asyncio
import logging

from nats.js import JetStreamContext

from mailflow.contracts import subjects
from mailflow.contracts.messages import TRACE_HEADER, DeliveryJob, DeliveryResult, TraceEvent
from mailflow.worker import Done, Outcome, Retry, Worker, backoff
from mailflow_delivery.routing import Deliveries

log = logging.getLogger(__name__)


def result_msg_id(r: DeliveryResult) -> str:
    return f"{r.queue_id}/{r.rcpt.lower()}/{r.attempt}/{r.outcome}"


async def publish(js: JetStreamContext, results: list[DeliveryResult], traces: list[TraceEvent]) -> None:
    """Results must be acknowledged (raises otherwise); traces are published alongside, best effort."""
    pubs = [
        js.publish(
            subjects.DELIVERY_RESULT,
            r.to_bytes(),
            timeout=10,
            headers={"Nats-Msg-Id": result_msg_id(r), TRACE_HEADER: r.trace_id},
        )
        for r in results
    ]
    trace_pubs = [js.publish(subjects.trace(t.queue_id), t.to_bytes(), timeout=10) for t in traces]
    done = await asyncio.gather(*pubs, *trace_pubs, return_exceptions=True)
    failed = [d for d in done[: len(pubs)] if isinstance(d, BaseException)]
    if failed:
        raise failed[0]
    lost = sum(isinstance(d, BaseException) for d in done[len(pubs) :])
    if lost:
        log.warning("trace events lost", extra={"count": lost})


class DeliveryWorker(Worker[DeliveryJob]):
    stream, durable, model = "JOBS", "delivery", DeliveryJob

    def __init__(self, nc, js: JetStreamContext, deliveries: Deliveries, batch: int = 128):
        super().__init__(nc, js, "delivery")
        self.deliveries = deliveries
        self.batch = batch

    async def handle_batch(self, items: list[tuple[DeliveryJob, int]]) -> list[Outcome]:
        try:
            results, traces = await self.deliveries.run([job for job, _ in items])
            await publish(self.js, results, traces)
        except Exception:
            log.exception("delivery batch failed; the jobs come again", extra={"jobs": len(items)})
            return [Retry(backoff(n)) for _, n in items]
        return [Done() for _ in items]
