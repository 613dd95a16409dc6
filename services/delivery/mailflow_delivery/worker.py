"""The loop: fetch a batch of jobs -> deliver -> publish the batch's results in one message -> ack.

Jobs come one per message (delivery.job, `DeliveryWorker`) or many per message (delivery.job.v2,
`DeliveryBatchWorker`); each process runs lanes of both.

A job is acknowledged only after its result is acknowledged by JetStream. The results of a batch go
in one `DeliveryResults` message (delivery.result.v2; a very large batch in several). If the RESULTS
stream does not take that subject (its configuration was last applied by a service that predates
it), they go one `DeliveryResult` per job on delivery.result instead, as before. If anything fails before
that (NATS away, an unexpected error), the whole batch is nak'ed and comes again; delivering it again
is harmless (the store keeps one copy per idempotency key, the sent log stops a second SMTP send).
Trace events are best effort (published without a PubAck): losing one never holds up mail.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext

from mailflow.contracts import subjects
from mailflow.contracts.messages import (
    TRACE_HEADER,
    DeliveryJob,
    DeliveryJobs,
    DeliveryResult,
    DeliveryResults,
    TraceEvent,
)
from mailflow.contracts.streams import DELIVERY_BATCHES, delivery_batches_consumer
from mailflow.jspub import BatchPublisher, NoStream, group_msg_id, publish_unacked
from mailflow.quickstop import QuickStop
from mailflow.worker import Done, Outcome, Retry, Worker, backoff, carried
from mailflow_delivery.routing import Deliveries

log = logging.getLogger(__name__)


# A result is at most ~2 KB of JSON (diagnostic 1000 characters, an address up to 320): 256 of them stay
# well below NATS's default max_payload of 1 MB.
RESULTS_PER_MESSAGE = 256


def result_msg_id(r: DeliveryResult) -> str:
    return f"{r.queue_id}/{r.rcpt.lower()}/{r.attempt}/{r.outcome}"


def results_msg_id(results: list[DeliveryResult]) -> str:
    """Same results, same id: a batch published again after a lost PubAck is dropped by JetStream."""
    return group_msg_id("results", [result_msg_id(r) for r in results])


def batched(results: list[DeliveryResult]) -> list[tuple[str, bytes, dict[str, str]]]:
    out = []
    for k in range(0, len(results), RESULTS_PER_MESSAGE):
        part = results[k : k + RESULTS_PER_MESSAGE]
        out.append((subjects.DELIVERY_RESULTS, DeliveryResults(results=part).to_bytes(), {"Nats-Msg-Id": results_msg_id(part)}))
    return out


def one_by_one(results: list[DeliveryResult]) -> list[tuple[str, bytes, dict[str, str]]]:
    return [(subjects.DELIVERY_RESULT, r.to_bytes(), {"Nats-Msg-Id": result_msg_id(r), TRACE_HEADER: r.trace_id}) for r in results]


async def publish(pub: BatchPublisher, results: list[DeliveryResult], traces: list[TraceEvent]) -> None:
    """Results must be acknowledged (raises otherwise); traces follow, best effort, without PubAcks."""
    if results:
        try:
            await pub.publish_strict(batched(results))
        except NoStream:
            log.warning("stream RESULTS does not take %s yet: one message per result", subjects.DELIVERY_RESULTS)
            await pub.publish_strict(one_by_one(results))
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


class DeliveryBatchWorker(DeliveryWorker):
    """delivery.job.v2: each message holds many jobs (`DeliveryJobs`). The jobs of all messages fetched
    together are delivered as one batch; every message is acknowledged once all results are PubAck'ed,
    or all come again. Binding creates the consumer: its activity tells the queue to send batches."""

    durable, model = DELIVERY_BATCHES[1], DeliveryJobs
    own_consumer = staticmethod(delivery_batches_consumer)

    async def handle_batch(self, items: list[tuple[DeliveryJobs, int]]) -> list[Outcome]:
        return await carried(items, lambda b: b.jobs, super().handle_batch)
