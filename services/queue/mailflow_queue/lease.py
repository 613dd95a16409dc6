"""Which queue process runs the scheduler: the holder of a lease row in the shared PostgreSQL database.

Every replica runs intake, results and the admin REST; the scheduler's work (due retries, delay
notices, DSNs, body deletion, purging, TLS-RPT reports) is done by one of them at a time, the lease's
holder. The holder renews the lease every `renew_s` for `ttl_s` ahead, on the database's clock; the
others try to take it every `renew_s`, and can once it has expired. A taken lease gets a new `token`,
the term's fencing token. So after the holder dies (kill -9, a lost node) another replica takes over
between ttl_s - renew_s and ttl_s + renew_s later; after a clean stop at once (the lease is released).

A term ends for its holder `renew_s` before the database lets anyone else take the lease (the local
deadline counts from before the renewal was sent: the database's expiry can only be later), and the
scheduler checks two things while it acts: every transaction that decides something checks the term
in the database (`fence`: holder, token and expiry; a stale holder's transaction raises LeaseLost),
and before every publish it checks the local deadline and token (`holds`). A process that was paused
(SIGSTOP, a frozen VM, a long GC) and wakes up after its term finds both false and does nothing more.
What the lease cannot fence is a publish already handed to the socket when the pause began; what
that could duplicate is caught further on: a job's Nats-Msg-Id and delivery's idempotency, a DSN's
queue id fixed in the database (intake records it once).

A renewal that fails (database away) is logged and tried again; the term runs out by itself.
SQLite has one queue process by definition: `SoleLease` is always held and fences nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from mailflow import ids
from mailflow_queue import metrics
from mailflow_queue.db import SchedulerLease

log = logging.getLogger(__name__)

NAME = "scheduler"


class LeaseLost(Exception):
    """This process's term as the scheduler is over (or never began): it must not act."""


@dataclass(frozen=True)
class Term:
    token: int


def holder_id() -> str:
    """This process, as the lease row names it: host (the pod's name on Kubernetes), pid, and a random
    part (a restarted container may get the same pid)."""
    return f"{socket.gethostname()[:120]}/{os.getpid()}/{ids.ref()}"


class SoleLease:
    """SQLite: the only queue process on its database holds the lease for ever."""

    _TERM = Term(0)

    def __init__(self) -> None:
        metrics.SCHEDULER_ACTIVE.set(1)

    def term(self) -> Term | None:
        return self._TERM

    def holds(self, term: Term) -> bool:
        return True

    def fence(self, s: Session, term: Term) -> None:
        pass

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()


class DbLease:
    def __init__(
        self,
        engine: sa.Engine,
        holder: str,
        ttl_s: float = 3.0,
        renew_s: float = 1.0,
        on_acquired: Callable[[], None] = lambda: None,
    ):
        if ttl_s <= 2 * renew_s:
            raise ValueError(f"the lease ({ttl_s} s) must outlast two renewals ({renew_s} s each)")
        self.engine, self.holder, self.ttl_s, self.renew_s, self.on_acquired = engine, holder, ttl_s, renew_s, on_acquired
        self._token: int | None = None  # the term's token while held
        self._until = 0.0  # time.monotonic() at which this process stops acting
        self._failing = False
        # its own thread and connection: a renewal never waits behind intake's transactions
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue-lease")
        metrics.SCHEDULER_ACTIVE.set(0)

    # --- what the scheduler asks ----------------------------------------------------------------

    def term(self) -> Term | None:
        """The current term, if this process holds the lease now."""
        return Term(self._token) if self._token is not None and time.monotonic() < self._until else None

    def holds(self, term: Term) -> bool:
        """Whether `term` is still this process's, by the local deadline: asked before each publish."""
        return self._token == term.token and time.monotonic() < self._until

    def fence(self, s: Session, term: Term) -> None:
        """Inside a transaction that decides something: LeaseLost unless the database still says `term`
        is this process's and unexpired. No lock: a stalled holder never holds up a takeover; what
        two schedulers could both take in a moment's overlap they claim with SKIP LOCKED (ledger.py)."""
        t = SchedulerLease.__table__
        held = s.execute(
            sa.select(t.c.token).where(
                t.c.name == NAME, t.c.holder == self.holder, t.c.token == term.token, t.c.expires_at > sa.func.clock_timestamp()
            )
        ).first()
        if held is None:
            raise LeaseLost(f"term {term.token} of {self.holder} is over")

    # --- the loop ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Take or renew the lease every renew_s until `stop`; then give it up."""
        try:
            while not stop.is_set():
                await self.renew()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.renew_s)
        finally:
            if self._token is not None:
                self._token, self._until = None, 0.0
                metrics.SCHEDULER_ACTIVE.set(0)
                try:
                    await asyncio.get_running_loop().run_in_executor(self._pool, self._release)
                    log.info("scheduler lease released", extra={"holder": self.holder})
                except Exception as exc:
                    log.warning("could not release the scheduler lease (it expires by itself): %s", exc)
            self._pool.shutdown(wait=False)

    async def renew(self) -> None:
        """One try: renew the lease if this process holds it, take it if it has expired."""
        started = time.monotonic()  # the database's expiry is at least ttl_s after this
        try:
            token = await asyncio.get_running_loop().run_in_executor(self._pool, self._take)
        except Exception as exc:
            if not self._failing:
                log.warning("could not renew or take the scheduler lease: %s", exc)
            self._failing = True
            return
        self._failing = False
        if token is None:
            if self._token is not None:
                log.warning("scheduler lease lost: another queue process holds it", extra={"holder": self.holder})
                self._token, self._until = None, 0.0
                metrics.SCHEDULER_ACTIVE.set(0)
            return
        acquired = token != self._token or time.monotonic() >= self._until
        self._token, self._until = token, started + self.ttl_s - self.renew_s
        if acquired:
            metrics.SCHEDULER_ACTIVE.set(1)
            log.info("scheduler lease taken: this queue process runs the scheduler", extra={"holder": self.holder, "token": token})
            self.on_acquired()

    def _take(self) -> int | None:
        """Renew our lease, or take one that has expired: the term's token, or None if another holds it."""
        t = SchedulerLease.__table__
        now = sa.func.clock_timestamp()
        mine = t.c.holder == self.holder
        stmt = (
            sa.update(t)
            .where(t.c.name == NAME, sa.or_(mine, t.c.expires_at < now))
            .values(
                holder=self.holder,
                token=sa.case((mine, t.c.token), else_=t.c.token + 1),
                expires_at=now + sa.literal(timedelta(seconds=self.ttl_s), sa.Interval()),
            )
            .returning(t.c.token)
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).scalar()

    def _release(self) -> None:
        """A clean stop: the lease expires now, so a standby takes it at its next try."""
        t = SchedulerLease.__table__
        with self.engine.begin() as conn:
            conn.execute(sa.update(t).where(t.c.name == NAME, t.c.holder == self.holder).values(expires_at=sa.func.clock_timestamp()))
