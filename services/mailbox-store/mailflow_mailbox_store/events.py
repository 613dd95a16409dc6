"""What the store tells others: MailboxEvents (core NATS, a hint to look), UserRevoked (core NATS: end
these sessions now) and TraceEvents (stream TRACE).

Both are published after COMMIT and are best effort: if NATS is away, the change is still stored and
sessions see it at their next NOOP/changes() call; nats-py buffers while it reconnects. A publish that
fails is logged and counted, never raised into the operation that caused it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from mailflow import natsconn
from mailflow.contracts import subjects
from mailflow.contracts.messages import TRACE_HEADER, MailboxEvent, TraceEvent, UserRevoked
from mailflow_mailbox_store import metrics

log = logging.getLogger(__name__)


class Publisher(Protocol):
    async def mailbox(self, event: MailboxEvent) -> None: ...
    async def revoked(self, event: UserRevoked) -> None: ...
    async def trace(self, event: TraceEvent) -> None: ...


class NatsPublisher:
    """Connects in the background (the store serves without NATS; events wait for it)."""

    def __init__(self, url: str, name: str = "mailbox-store", login: dict[str, str] | None = None):
        self.url, self.name, self.login = url, name, login or {}
        self.nc = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        while self.nc is None:
            try:
                self.nc = await natsconn.connect(self.url, self.name, initial_timeout=3600, **self.login)
            except Exception as exc:  # keep trying: the store works without NATS meanwhile
                log.warning("NATS not reachable yet: %s", exc)
                await asyncio.sleep(1)

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def _publish(self, subject: str, data: bytes, headers: dict | None = None) -> bool:
        if self.nc is None:
            return False
        try:
            await self.nc.publish(subject, data, headers=headers)
            return True
        except Exception as exc:
            log.warning("publish failed", extra={"subject": subject, "error": repr(exc)})
            return False

    async def mailbox(self, event: MailboxEvent) -> None:
        if await self._publish(subjects.mailbox_events(event.user_id), event.to_bytes()):
            metrics.EVENTS.labels(event.kind).inc()

    async def revoked(self, event: UserRevoked) -> None:
        if await self._publish(subjects.USER_REVOKED, event.to_bytes()):
            metrics.EVENTS.labels("revoked").inc()

    async def trace(self, event: TraceEvent) -> None:
        headers = {TRACE_HEADER: event.trace_id} if event.trace_id else None
        if await self._publish(subjects.trace(event.queue_id), event.to_bytes(), headers):
            metrics.TRACES.labels(event.step).inc()

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        await natsconn.close(self.nc)
