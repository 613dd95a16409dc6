"""Revocations: when the store revokes a user's credentials (password change, disable, delete), the
user's IMAP and POP3 sessions here end (IMAP `* BYE`, POP3 `-ERR [AUTH]`, then close) and its cached
logins are forgotten.

Two ways to learn it:
  - UserRevoked (core NATS, subject user.revoked; one subscription per process): sessions end within
    milliseconds of the change, IDLE ones included. A session whose principal is of the event's
    generation or newer (it logged in with the new password) is left alone.
  - a sweep every `revocation_check` seconds, and at once after a NATS reconnection, asks the store
    which tokens of the live sessions and of the login cache it refuses now, because core NATS delivers
    at most once and nothing while disconnected. Sessions that call the store meanwhile find out
    themselves (401: SessionExpired ends them); the sweep is for those that make no calls (IDLE, a
    client resting in the authenticated state).
A malformed event is logged and dropped. A sweep that fails (store down) is logged and tried again at
the next interval; it never ends a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from mailflow.contracts import subjects
from mailflow.contracts.messages import UserRevoked
from mailflow_imap_pop3 import metrics
from mailflow_imap_pop3.context import Context

log = logging.getLogger(__name__)


class Revoker:
    def __init__(self, ctx: Context, nc=None, interval: float = 30.0):
        self.ctx, self.nc, self.interval = ctx, nc, interval
        self._sub = None
        self._task: asyncio.Task | None = None

    async def start(self) -> Revoker:
        if self.nc is not None:
            self._sub = await self.nc.subscribe(subjects.USER_REVOKED, cb=self._on_msg)
            await self.nc.flush(timeout=2)
        if self.interval > 0:
            self._task = asyncio.create_task(self._sweeps())
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _on_msg(self, msg) -> None:
        try:
            event = UserRevoked.from_bytes(msg.data)
        except Exception as exc:
            log.warning("malformed revocation dropped: %s", exc)
            return
        self.revoke(event.user_id, event.generation, event.reason)

    def revoke(self, user_id: int, generation: int | None, reason: str = "") -> int:
        """End the user's sessions older than `generation` (None: all) and forget its cached logins.
        Returns how many sessions were ended."""
        self.ctx.auth.cache.revoke(user_id, generation)
        ended = 0
        for session in list(self.ctx.sessions):
            p = session.principal
            if p is not None and p.user_id == user_id and (generation is None or p.generation < generation):
                session.revoke()
                ended += 1
        metrics.REVOKED.inc(ended)
        log.info("sessions revoked", extra={"user_id": user_id, "reason": reason, "sessions": ended})
        return ended

    async def sweep(self) -> int:
        """Ask the store about every token we hold; end the sessions and drop the logins it refuses."""
        sessions = [s for s in self.ctx.sessions if s.principal is not None]
        cached = self.ctx.auth.cache.principals()
        tokens = list(dict.fromkeys([s.principal.token for s in sessions] + [p.token for p in cached]))
        if not tokens:
            return 0
        expired = await self.ctx.store.expired_sessions(tokens)
        for p in cached:
            if p.token in expired:
                self.ctx.auth.cache.forget(p)
        ended = 0
        for s in sessions:
            if s.principal is not None and s.principal.token in expired and s in self.ctx.sessions:
                s.revoke()
                ended += 1
        if ended:
            metrics.REVOKED.inc(ended)
            log.info("sessions ended by the sweep (a revocation event was missed)", extra={"sessions": ended})
        return ended

    async def _sweeps(self) -> None:
        last, epoch = time.monotonic(), self.ctx.hub.epoch()
        while True:
            await asyncio.sleep(min(1.0, self.interval))
            if time.monotonic() - last < self.interval and self.ctx.hub.epoch() == epoch:
                continue
            last, epoch = time.monotonic(), self.ctx.hub.epoch()
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("revocation sweep failed: %s", exc)
