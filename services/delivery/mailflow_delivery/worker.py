"""The loop: fetch job batches -> deliver -> publish the batch's results in one message -> ack.

Jobs come many to a message (`DeliveryJobs` on delivery.job); the jobs of every message fetched
together are delivered as one batch. A message is acknowledged only after the results of its jobs
are acknowledged by JetStream: they go in one `DeliveryResults` message on delivery.result (a very
large batch in several). If anything fails before that (NATS away, an unexpected error), the
exception goes to the worker base: each message is tried again alone, one that still fails is split
into messages of one job and nak'ed, and a job that keeps failing ends in DEAD alone. Delivering a job again is harmless (the store keeps one copy per
idempotency key, the sent log stops a second SMTP send).
Trace events are best effort (published without a PubAck): losing one never holds up mail.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext

from mailflow.contracts import streams, subjects
from mailflow.contracts.messages import DeliveryJobs, DeliveryResult, DeliveryResults, TraceEvent
from mailflow.jspub import BatchPublisher, Item, group_msg_id, publish_unacked
from mailflow.quickstop import QuickStop
from mailflow.worker import Done, Outcome, Worker
from mailflow_delivery.routing import Deliveries

log = logging.getLogger(__name__)


# A result is at most ~2 KB of JSON (diagnostic 1000 characters, an address up to 320): 256 of them stay
# well below NATS's default max_payload of 1 MB.
RESULTS_PER_MESSAGE = 256


def result_msg_id(r: DeliveryResult) -> str:
    return f"{r.queue_id}/{r.rcpt.lower()}/{r.attempt}/{r.outcome}"


def batched(results: list[DeliveryResult]) -> list[Item]:
    """The DeliveryResults messages that carry these results. Same results, same Nats-Msg-Id: a batch
    published again after a lost PubAck is dropped by JetStream."""
    out: list[Item] = []
    for k in range(0, len(results), RESULTS_PER_MESSAGE):
        part = results[k : k + RESULTS_PER_MESSAGE]
        msg_id = group_msg_id("results", [result_msg_id(r) for r in part])
        out.append((subjects.DELIVERY_RESULT, DeliveryResults(results=part).to_bytes(), {"Nats-Msg-Id": msg_id}))
    return out


async def publish(pub: BatchPublisher, results: list[DeliveryResult], traces: list[TraceEvent]) -> None:
    """Results must be acknowledged (raises otherwise); traces follow, best effort, without PubAcks."""
    if results:
        await pub.publish_strict(batched(results))
    lost = await publish_unacked(pub.nc, [(subjects.trace(t.queue_id), t.to_bytes(), None) for t in traces])
    if lost:
        log.warning("trace events lost", extra={"count": lost})


class DeliveryWorker(QuickStop, Worker[DeliveryJobs]):
    stream, durable = streams.DELIVERY
    model, items = DeliveryJobs, "jobs"

    def __init__(self, nc, js: JetStreamContext, deliveries: Deliveries, batch: int = 8):
        super().__init__(nc, js, "delivery")
        self.deliveries = deliveries
        self.publisher = BatchPublisher(nc)
        self.batch = batch  # messages per fetch, each of up to 32 jobs

    async def handle_batch(self, items: list[tuple[DeliveryJobs, int]]) -> list[Outcome]:
        results, traces = await self.deliveries.run([job for batch, _ in items for job in batch.jobs])
        await publish(self.publisher, results, traces)
        return [Done() for _ in items]
