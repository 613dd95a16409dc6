"""Publishing what the queue decided: delivery jobs, DSNs (as new messages) and trace events.

All publishes of one batch are awaited together. Trace events are best effort: published without a
PubAck, never a reason to fail a batch. A job that JetStream does not acknowledge raises; the caller
then acknowledges nothing (or leaves the recipients in flight), so the same work is published again
later.

Jobs go many to a message (`DeliveryJobs` on delivery.job, up to JOBS_PER_MESSAGE jobs or
JOBS_MESSAGE_BYTES): one JetStream write, PubAck and ack per message instead of per recipient. A
message of one job has Nats-Msg-Id `<queue_id>/<rcpt>/<attempt>`, of several a digest of those, so a
second publish inside the duplicate window is dropped by JetStream; a job published again in another
grouping may be delivered twice, which delivery makes harmless (the store's idempotency key, the sent
log). A DSN enters like any message: a group of one on mail.queued, Nats-Msg-Id its queue id.
"""

from __future__ import annotations

import json
import logging
from typing import Protocol

from nats.js import JetStreamContext

from mailflow.bodies import BodyRef
from mailflow.contracts import subjects
from mailflow.contracts.messages import (
    TRACE_HEADER,
    DeliveryJob,
    DeliveryJobs,
    QueuedMessage,
    QueuedMessages,
    TraceEvent,
)
from mailflow.jspub import BatchPublisher, Item, fits, group_msg_id, json_bound, publish_unacked

log = logging.getLogger(__name__)

BODY_STREAM = "BODY"
JOBS_PER_MESSAGE = 32  # small enough that several delivery processes share a burst
JOBS_MESSAGE_BYTES = 512 * 1024  # NATS max_payload defaults to 1 MB; one inline body is at most ~350 KB of base64


def job_msg_id(job: DeliveryJob) -> str:
    return f"{job.queue_id}/{job.rcpt.address.lower()}/{job.attempt}"


def batched(jobs: list[DeliveryJob]) -> list[Item]:
    """The DeliveryJobs messages that carry these jobs, in order."""
    sizes = [json_bound(job.body, 2048) for job in jobs]  # addresses, ORCPT, ENVID: SMTP-bounded
    out: list[Item] = []
    k = 0
    while k < len(jobs):
        n = fits(sizes[k : k + JOBS_PER_MESSAGE], JOBS_PER_MESSAGE, JOBS_MESSAGE_BYTES)
        part = jobs[k : k + n]
        out.append((subjects.DELIVERY_JOB, DeliveryJobs(jobs=part).to_bytes(), {"Nats-Msg-Id": group_msg_id("jobs", [job_msg_id(j) for j in part])}))
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

    async def publish(self, jobs: list[DeliveryJob], traces: list[TraceEvent] = ()) -> None:
        if jobs:
            await self.batch.publish_strict(batched(jobs))
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
        """A message the queue made (a DSN) into MAIL, as smtp-ingress's envelopes go."""
        data = QueuedMessages(messages=[msg]).to_bytes()
        await self.js.publish(subjects.MAIL_QUEUED, data, timeout=self.timeout, headers={"Nats-Msg-Id": group_msg_id("mail", [msg.queue_id])})
