"""The loop: fetch a batch of jobs -> deliver -> publish one result per job -> ack.

A job is acknowledged only after its result is acknowledged by JetStream. If anything fails before
that (NATS away, an unexpected error), the whole batch is nak'ed and comes again; delivering it again
is harmless (the store keeps one copy per idempotency key, the sent log stops a second SMTP send).
Trace events are best effort (published without a PubAck): losing one never holds up mail.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext

from mailflow.contracts import subjects
from mailflow.contracts.messages import TRACE_HEADER, DeliveryJob, DeliveryResult, TraceEvent
from mailflow.jspub import BatchPublisher, publish_unacked
from mailflow.quickstop import QuickStop
from mailflow.worker import Done, Outcome, Retry, Worker, backoff
from mailflow_delivery.routing import Deliveries

log = logging.getLogger(__name__)


def result_msg_id(r: DeliveryResult) -> str:
    return f"{r.queue_id}/{r.rcpt.lower()}/{r.attempt}/{r.outcome}"


async def publish(pub: BatchPublisher, results: list[DeliveryResult], traces: list[TraceEvent]) -> None:
    """Results must be acknowledged (raises otherwise); traces follow, best effort, without PubAcks."""
    items = [
        (subjects.DELIVERY_RESULT, r.to_bytes(), {"Nats-Msg-Id": result_msg_id(r), TRACE_HEADER: r.trace_id}) for r in results
    ]
    await pub.publish_strict(items)
    lost = await publish_unacked(pub.nc, [(subjects.trace(t.queue_id), t.to_bytes(), None) for t in traces])
    if lost:
        log.warning("trace events lost", extra={"count": lost})


class DeliveryWorker(QuickStop, Worker[DeliveryJob]):
    stream, durable, model = "JOBS", "delivery", DeliveryJob

    def __init__(self, nc, js: JetStreamContext, deliveries: Deliveries, batch: int = 128):
        super().__init__(nc, js, "delivery")
        self.deliveries = deliveries
        self.publisher = BatchPublisher(nc)
        self.batch = batch

    async def handle_batch(self, items: list[tuple[DeliveryJob, int]]) -> list[Outcome]:
        try:
            results, traces = await self.deliveries.run([job for job, _ in items])
            await publish(self.publisher, results, traces)
        except Exception:
            log.exception("delivery batch failed; the jobs come again", extra={"jobs": len(items)})
            return [Retry(backoff(n)) for _, n in items]
        return [Done() for _ in items]
