"""Handing an accepted message to the queue: the envelope into MAIL, with the body inside it when small.

A body up to `inline_max` bytes (mailflow.bodies.should_inline) travels inside the QueuedMessage:
one JetStream write. A larger one goes into stream BODY first, then the envelope that refers to it.
`JetStreamQueue.enqueue` returns only when JetStream acknowledged both (the body first, so the
queue never sees an envelope whose body is not there yet); only then does the session answer 250.
Any NATS error or timeout raises `ServiceUnavailable`, which the client sees as 451 4.3.0: the
client keeps the message and retries, so nothing is lost. A body stored without its envelope (we
failed between the two) is never referenced and expires with the BODY stream's max_age.
A message answered 451 must never be stored later (the client's retry would be a second copy): while
the connection is down `enqueue` refuses at once and publishes nothing, and the connection has no
reconnect buffer (mailflow.natsconn, `reconnect_buffer=False`), so a publish while disconnected raises
and what was unsent when the connection dropped is never sent. Only a message handed to the socket
before the 451 may still be stored (no PubAck in time): RFC 1047's ambiguous case.
Group commit (`EnvelopeGroups`): the envelopes that sessions finish while the previous group is being
written go together in one `QueuedMessages` message on mail.queued, one write and fsync for all (at
light load a group holds one envelope and leaves at once). Each session answers 250 only when its
group is PubAck'ed; if the group fails, every session in it answers 451. A group's Nats-Msg-Id is
the queue id of its one envelope, else a digest of its queue ids, so a re-publish inside the
duplicate window is dropped by JetStream: a group whose PubAck does not come within 1 s (its NATS
server died, the stream leader is being elected) is published again until the publish timeout
(mailflow.jspub.publish_until_acked), and its sessions get the 250 once a copy is acknowledged.
Trace events are fire-and-forget (core NATS into stream TRACE), gathered for `trace_delay` seconds so
that one socket write carries the events of many messages; `close()` sends what is still waiting.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from mailflow.bodies import INLINE_MAX, Bodies, inline_ref, should_inline
from mailflow.contracts import subjects
from mailflow.contracts.messages import TRACE_HEADER, QueuedMessage, QueuedMessages, TraceEvent
from mailflow.errors import ServiceUnavailable
from mailflow.jspub import fits, group_msg_id, json_bound, publish_until_acked

log = logging.getLogger(__name__)


class MessageQueue(Protocol):
    async def enqueue(self, raw: bytes, fields: dict[str, Any]) -> QueuedMessage:
        """Durable when it returns. `fields` are QueuedMessage's fields except body_ref."""
        ...

    async def trace(self, event: TraceEvent) -> None: ...


def envelope_bound(msg: QueuedMessage) -> int:
    """Its JSON size for `fits`: the inline body, 2 KiB for the envelope's fields and 1 KiB per
    recipient (address, ORCPT and NOTIFY are bounded by the SMTP line limits)."""
    return json_bound(msg.body, 2048 + 1024 * len(msg.rcpt_to))


class EnvelopeGroups:
    """One publish in flight at a time; what arrives meanwhile leaves together next (up to `max_count`
    envelopes or `max_bytes`). `submit` returns when the envelope's group is PubAck'ed, or raises."""

    def __init__(self, js: JetStreamContext, timeout: float, max_count: int = 64, max_bytes: int = 512 * 1024):
        self.js, self.timeout, self.max_count, self.max_bytes = js, timeout, max_count, max_bytes
        self._waiting: list[tuple[QueuedMessage, asyncio.Future]] = []
        self._sender: asyncio.Task | None = None

    async def submit(self, msg: QueuedMessage) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append((msg, fut))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send())
        await fut

    def _take(self) -> list[tuple[QueuedMessage, asyncio.Future]]:
        n = fits([envelope_bound(m) for m, _ in self._waiting[: self.max_count]], self.max_count, self.max_bytes)
        group, self._waiting = self._waiting[:n], self._waiting[n:]
        return group

    async def _send(self) -> None:
        try:
            while self._waiting:
                group = self._take()
                msgs = [m for m, _ in group]
                data, msg_id = QueuedMessages(messages=msgs).to_bytes(), group_msg_id("mail", [m.queue_id for m in msgs])
                try:
                    await publish_until_acked(self.js, subjects.MAIL_QUEUED, data, msg_id, self.timeout)
                except BaseException as exc:
                    for _, fut in group:
                        if not fut.done():
                            fut.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                else:
                    for _, fut in group:
                        if not fut.done():
                            fut.set_result(None)
        finally:
            self._sender = None
            for _, fut in self._waiting:  # cancelled: nobody sends these
                if not fut.done():
                    fut.set_exception(TimeoutError("envelope group not sent"))
            self._waiting = []


class JetStreamQueue:
    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        bodies: Bodies,
        timeout: float = 10.0,
        trace_delay: float = 0.02,
        inline_max: int = INLINE_MAX,
    ):
        self.nc, self.js, self.bodies, self.timeout = nc, js, bodies, timeout
        self.trace_delay, self.inline_max = trace_delay, inline_max
        self._traces: list[TraceEvent] = []
        self._trace_task: asyncio.Task | None = None
        self.groups = EnvelopeGroups(js, timeout)

    async def enqueue(self, raw: bytes, fields: dict[str, Any]) -> QueuedMessage:
        queue_id = fields["queue_id"]
        if not self.nc.is_connected:
            raise ServiceUnavailable(f"NATS is not connected, {queue_id} not queued")
        try:
            if should_inline(len(raw), len(fields["rcpt_to"]), self.inline_max):
                msg = QueuedMessage(body_ref=inline_ref(queue_id, len(raw)), body=raw, **fields)
            else:
                msg = QueuedMessage(body_ref=await self.bodies.put(queue_id, raw), **fields)
            await self.groups.submit(msg)
        except (TimeoutError, nats.errors.Error) as exc:
            raise ServiceUnavailable(
                f"JetStream did not take {queue_id}: {type(exc).__name__}: {exc}"
            ) from exc
        return msg

    async def trace(self, event: TraceEvent) -> None:
        self._traces.append(event)
        if self._trace_task is None:
            self._trace_task = asyncio.create_task(self._send_traces())

    async def _send_traces(self) -> None:
        try:
            await asyncio.sleep(self.trace_delay)
        finally:
            batch, self._traces, self._trace_task = self._traces, [], None
            for event in batch:
                try:
                    await self.nc.publish(
                        subjects.trace(event.queue_id),
                        event.to_bytes(),
                        headers={TRACE_HEADER: event.trace_id},
                    )
                except Exception as exc:  # a lost trace line never fails a message
                    log.debug("trace not published: %s", exc)

    async def close(self) -> None:
        """Send the trace events still waiting (before NATS is drained)."""
        task = self._trace_task
        if task is not None:
            task.cancel()  # skips the wait; the finally clause still publishes the batch
            try:
                await task
            except asyncio.CancelledError:
                pass
