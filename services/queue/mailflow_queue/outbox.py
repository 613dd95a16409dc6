"""Publishing what the queue decided: delivery jobs, DSNs (as new messages) and trace events.

All publishes of one batch are awaited together. Trace events are best effort: published without a
PubAck, never a reason to fail a batch. A job that JetStream does not acknowledge raises; the caller then acknowledges nothing (or leaves the recipients in flight), so the same
work is published again later. Jobs carry Nats-Msg-Id `<queue_id>/<rcpt>/<attempt>` and messages
Nats-Msg-Id `<queue_id>`, so a second publish inside the duplicate window is dropped by JetStream.
"""

from __future__ import annotations

import json
from typing import Protocol

from nats.js import JetStreamContext

from mailflow.bodies import BodyRef
from mailflow.contracts import subjects
from mailflow.contracts.messages import TRACE_HEADER, DeliveryJob, QueuedMessage, TraceEvent
from mailflow.jspub import BatchPublisher, publish_unacked

BODY_STREAM = "BODY"


def job_msg_id(job: DeliveryJob) -> str:
    return f"{job.queue_id}/{job.rcpt.address.lower()}/{job.attempt}"


class Outbox(Protocol):
    async def publish(self, jobs: list[DeliveryJob], traces: list[TraceEvent] = ()) -> None: ...
    async def inject(self, msg: QueuedMessage) -> None: ...
    async def delete_bodies(self, refs: list[str]) -> list[BaseException | None]: ...


class JetStreamOutbox:
    def __init__(self, js: JetStreamContext, timeout: float = 10.0):
        self.js, self.timeout = js, timeout
        self.batch = BatchPublisher(js._nc, timeout)

    async def publish(self, jobs: list[DeliveryJob], traces: list[TraceEvent] = ()) -> None:
        items = [
            (subjects.DELIVERY_JOB, job.to_bytes(), {"Nats-Msg-Id": job_msg_id(job), TRACE_HEADER: job.trace_id})
            for job in jobs
        ]
        await self.batch.publish_strict(items)
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
