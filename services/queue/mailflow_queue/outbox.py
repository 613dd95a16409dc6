"""Publishing what the queue decided: delivery jobs, DSNs (as new messages) and trace events.

All publishes of one batch are awaited together. Trace events are best effort: published without a
PubAck, never a reason to fail a batch. A job that JetStream does not acknowledge raises; the caller then acknowledges nothing (or leaves the recipients in flight), so the same
work is published again later. Jobs carry Nats-Msg-Id `<queue_id>/<rcpt>/<attempt>` and messages
Nats-Msg-Id `<queue_id>`, so a second publish inside the duplicate window is dropped by JetStream.

While a delivery that reads delivery.job.v2 is live (`ReaderProbe`), jobs go many to a message
(`DeliveryJobs`, up to JOBS_PER_MESSAGE jobs or JOBS_MESSAGE_BYTES): one JetStream write, PubAck
and ack per message instead of per recipient. A message's Nats-Msg-Id is a digest of its jobs' ids;
a job published again in another grouping may be delivered twice, which delivery makes harmless
(the store's idempotency key, the sent log). If the JOBS stream does not take .v2 (configured last
by an older service), the jobs go one by one on delivery.job.
"""

from __future__ import annotations

import json
import logging
from typing import Protocol

from nats.js import JetStreamContext

from mailflow.bodies import BodyRef
from mailflow.contracts import subjects
from mailflow.contracts.messages import TRACE_HEADER, DeliveryJob, QueuedMessage, TraceEvent
from mailflow.contracts.streams import DELIVERY_BATCHES
from mailflow.jspub import BatchPublisher, Item, NoStream, ReaderProbe, carrier, fits, publish_unacked

log = logging.getLogger(__name__)

BODY_STREAM = "BODY"
JOBS_PER_MESSAGE = 32  # small enough that several delivery processes share a burst
JOBS_MESSAGE_BYTES = 512 * 1024  # NATS max_payload defaults to 1 MB; one inline body is at most ~350 KB of base64


def job_msg_id(job: DeliveryJob) -> str:
    return f"{job.queue_id}/{job.rcpt.address.lower()}/{job.attempt}"


def one_by_one(jobs: list[DeliveryJob]) -> list[Item]:
    return [(subjects.DELIVERY_JOB, job.to_bytes(), {"Nats-Msg-Id": job_msg_id(job), TRACE_HEADER: job.trace_id}) for job in jobs]


def batched(jobs: list[DeliveryJob]) -> list[Item]:
    """DeliveryJobs messages, each job serialised once (the message is their JSON array in an envelope)."""
    datas = [job.to_bytes() for job in jobs]
    out: list[Item] = []
    k = 0
    while k < len(jobs):
        n = fits([len(d) for d in datas[k : k + JOBS_PER_MESSAGE]], JOBS_PER_MESSAGE, JOBS_MESSAGE_BYTES)
        data, msg_id = carrier("jobs", datas[k : k + n], [job_msg_id(j) for j in jobs[k : k + n]], "jobs")
        out.append((subjects.DELIVERY_JOBS, data, {"Nats-Msg-Id": msg_id}))
        k += n
    return out


class Outbox(Protocol):
    async def publish(self, jobs: list[DeliveryJob], traces: list[TraceEvent] = ()) -> None: ...
    async def inject(self, msg: QueuedMessage) -> None: ...
    async def delete_bodies(self, refs: list[str]) -> list[BaseException | None]: ...


class JetStreamOutbox:
    def __init__(self, js: JetStreamContext, timeout: float = 10.0):
        self.js, self.timeout = js, timeout
        self.batch = BatchPublisher(js._nc, timeout)
        # a delivery that reads delivery.job.v2 is running; a batch sent after it went away is published
        # again (one by one) at the in-flight timeout, so "recently active" may be generous
        self.reader = ReaderProbe(js, *DELIVERY_BATCHES, recent=300.0)

    async def publish(self, jobs: list[DeliveryJob], traces: list[TraceEvent] = ()) -> None:
        if jobs and await self.reader.live():
            try:
                await self.batch.publish_strict(batched(jobs))
            except NoStream:
                log.warning("stream JOBS does not take %s yet: one message per job", subjects.DELIVERY_JOBS)
                await self.batch.publish_strict(one_by_one(jobs))
        elif jobs:
            await self.batch.publish_strict(one_by_one(jobs))
        if traces:
            await publish_unacked(self.js._nc, [(subjects.trace(t.queue_id), t.to_bytes(), {TRACE_HEADER: t.trace_id}) for t in traces])

    async def delete_bodies(self, refs: list[str]) -> list[BaseException | None]:
        """Purge each body's chunks from BODY, all requests in one batch (what JetStreamBodies.delete
        does one at a time). None where it worked, the exception where it did not."""
        items = [
            (f"$JS.API.STREAM.PURGE.{BODY_STREAM}", json.dumps({"filter": subjects.body_all(BodyRef.parse(r).queue_id)}).encode(), None)
            for r in refs
        ]
        return [a if isinstance(a, BaseException) else None for a in await self.batch.publish(items)]

    async def inject(self, msg: QueuedMessage) -> None:
        await self.js.publish(
            subjects.MAIL_QUEUED,
            msg.to_bytes(),
            timeout=self.timeout,
            headers={"Nats-Msg-Id": msg.queue_id, TRACE_HEADER: msg.trace_id},
        )
