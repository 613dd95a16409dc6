"""Push: the store's MailboxEvents (core NATS, `mailbox.events.<user_id>`) to the sessions that care.

A session `watch`es its user while it has a mailbox selected; the hub holds one NATS subscription per
watched user, however many sessions that user has here, and drops it `linger` seconds after the last
one left (the same users come back, and a new subscription costs a round trip to NATS). An event is
only a hint ("look again"): sessions ask the store for the changes themselves, so a lost event costs
latency (the next NOOP or command finds the change), never correctness: NOOP and CHECK skip the store
only while `heard_all` says no event can have been missed, and at least every `noop_store_check`
seconds they ask anyway (core NATS delivers at most once). Without NATS (tests) the
hub still dispatches events handed to `dispatch`.
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
    def __init__(self, nc=None, linger: float = 60.0):
        self.nc = nc
        self.linger = linger  # a subscription outlives its last watcher this long (users come back)
        self._watchers: dict[int, set[Watcher]] = {}
        self._subs: dict[int, object] = {}
        self._drops: dict[int, asyncio.TimerHandle] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def watching(self, user_id: int) -> int:
        return len(self._watchers.get(user_id, ()))

    def subscribed(self, user_id: int) -> bool:
        return user_id in self._subs

    def epoch(self) -> int:
        """Changes whenever events may have been missed: each reconnection to NATS."""
        return self.nc.stats["reconnects"] if self.nc is not None else 0

    def heard_all(self, user_id: int, since_epoch: int) -> bool:
        """Would every event for this user since `since_epoch` have reached us? (Subscribed, connected,
        and no reconnection in between.)"""
        nc = self.nc
        return nc is not None and nc.is_connected and user_id in self._subs and self.epoch() == since_epoch

    async def watch(self, user_id: int, watcher: Watcher) -> None:
        self._watchers.setdefault(user_id, set()).add(watcher)
        drop = self._drops.pop(user_id, None)
        if drop is not None:
            drop.cancel()
        if self.nc is None or user_id in self._subs:
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
        if watchers:
            return
        del self._watchers[user_id]
        if user_id in self._subs and user_id not in self._drops:
            loop = asyncio.get_running_loop()
            self._drops[user_id] = loop.call_later(self.linger, self._drop, user_id)

    def _drop(self, user_id: int) -> None:
        self._drops.pop(user_id, None)
        if self._watchers.get(user_id):
            return
        sub = self._subs.pop(user_id, None)
        self._locks.pop(user_id, None)
        if sub is not None:
            asyncio.ensure_future(self._unsubscribe(sub))

    async def _unsubscribe(self, sub) -> None:
        try:
            await sub.unsubscribe()
        except Exception as exc:
            log.debug("unsubscribe: %s", exc)

    async def close(self) -> None:
        for handle in self._drops.values():
            handle.cancel()
        self._drops.clear()
        for sub in list(self._subs.values()):
            await self._unsubscribe(sub)
        self._subs.clear()

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
