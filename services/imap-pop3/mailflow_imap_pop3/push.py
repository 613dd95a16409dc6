"""Push: the store's MailboxEvents (core NATS, `mailbox.events.<user_id>`) to the sessions that care.

A session `watch`es its user while it has a mailbox selected; the hub holds one NATS subscription per
watched user, however many sessions that user has here, and drops it with the last one. An event is
only a hint ("look again"): sessions ask the store for the changes themselves, so a lost event costs
latency (the next NOOP or command finds the change), never correctness. Without NATS (tests) the
hub still dispatches events handed to `dispatch`, e.g. from MemoryStore.listeners.
A malformed event is logged and dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from mailflow.contracts import subjects
from mailflow.contracts.messages import MailboxEvent

from mailflow_imap_pop3 import metrics

log = logging.getLogger(__name__)

Watcher = Callable[[MailboxEvent], None]


class Hub:
    def __init__(self, nc=None):
        self.nc = nc
        self._watchers: dict[int, set[Watcher]] = {}
        self._subs: dict[int, object] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def watching(self, user_id: int) -> int:
        return len(self._watchers.get(user_id, ()))

    async def watch(self, user_id: int, watcher: Watcher) -> None:
        self._watchers.setdefault(user_id, set()).add(watcher)
        if self.nc is None:
            return
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        async with lock:
            if user_id in self._subs or not self._watchers.get(user_id):
                return
            try:
                self._subs[user_id] = await self.nc.subscribe(
                    subjects.mailbox_events(user_id), cb=self._on_msg
                )
                await self.nc.flush(timeout=2)  # subscribed before the caller reads the mailbox
            except Exception as exc:  # no push for now; NOOP and commands still find changes
                log.warning("cannot subscribe to mailbox events: %s", exc)

    async def unwatch(self, user_id: int, watcher: Watcher) -> None:
        watchers = self._watchers.get(user_id)
        if watchers is None:
            return
        watchers.discard(watcher)
        if watchers or self.nc is None:
            if not watchers:
                del self._watchers[user_id]
            return
        del self._watchers[user_id]
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        async with lock:
            sub = self._subs.pop(user_id, None) if not self._watchers.get(user_id) else None
            if sub is not None:
                try:
                    await sub.unsubscribe()
                except Exception as exc:
                    log.debug("unsubscribe: %s", exc)
        if user_id not in self._watchers and not lock.locked():
            self._locks.pop(user_id, None)

    async def _on_msg(self, msg) -> None:
        try:
            event = MailboxEvent.from_bytes(msg.data)
        except Exception as exc:
            metrics.EVENTS.labels("malformed").inc()
            log.warning("malformed mailbox event dropped: %s", exc)
            return
        self.dispatch(event)

    def dispatch(self, event: MailboxEvent) -> None:
        metrics.EVENTS.labels(event.kind).inc()
        for watcher in list(self._watchers.get(event.user_id, ())):
            try:
                watcher(event)
            except Exception:
                log.exception("event watcher failed")
