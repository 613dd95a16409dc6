"""The queue's clock-driven work: due retries, delay notices, DSNs, body deletion, purging, and the
daily TLS-RPT reports (RFC 8460: tlsrpt.py, tls_counts.py).

One queue process at a time does it: the holder of the scheduler lease (lease.py; with SQLite, the
only process). A pass runs in one term of the lease: each transaction that decides something is
fenced by the term in the database, each publish is preceded by a check that the term still holds,
and a pass that finds its term over stops (LeaseLost) and leaves the rest to the new holder.

Each pass is a few short transactions. A failure (database or NATS away, the lease lost) is logged
and the pass is tried again at the next tick; nothing is lost because every step is re-derived from
the database: due recipients are claimed for `claim_s` and, once their jobs are PubAck'ed, left in
flight until the in-flight timeout; a claim whose publish failed or never came (the process died or
lost the lease) lapses and the jobs go out again, with the same attempt number; a DSN is marked sent
only after JetStream acknowledged it; a body is deleted only after the message is final and its
DSNs are out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TypeVar

from mailflow import ids
from mailflow.authn import DnsLookup
from mailflow.bodies import Bodies, BodyMissing, inline_ref, is_inline, should_inline
from mailflow.contracts.messages import QueuedMessage, Recipient, TraceEvent
from mailflow_queue import dsn, ledger, metrics, tls_counts, tlsrpt
from mailflow_queue.db import Database
from mailflow_queue.lease import DbLease, LeaseLost, SoleLease, Term
from mailflow_queue.outbox import Outbox

log = logging.getLogger(__name__)

T = TypeVar("T")

TLS_REPORT_CHECK_S = 600.0  # how often the scheduler looks for TLS-RPT reports due
TLS_REPORT_GIVE_UP_DAYS = 2  # a domain whose record DNS cannot tell gets no report for a day this old
# How long due jobs taken by a pass stay claimed before they are due again if the pass never says they
# went out: longer than a publish may take (the outbox's PubAck timeout, 10 s) plus the lease, so a new
# holder never publishes jobs that the old one's last publish may still be putting out.
CLAIM_S = 15.0


@dataclass(frozen=True)
class TlsReporting:
    """TLS-RPT reports: who sends them (From: and contact-info), in whose name, asking DNS how."""

    dns: DnsLookup
    sender: str  # the From: address, also the report's contact-info
    organization: str


class Scheduler:
    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        bodies: Bodies,
        policy: ledger.Policy,
        hostname: str,
        interval: float = 1.0,
        retain_done_s: float = 86400.0,
        dsn_full_max: int = 1 << 20,
        clock: Callable[[], float] = time.time,
        tls_reports: TlsReporting | None = None,
        lease: DbLease | SoleLease | None = None,
        claim_s: float = CLAIM_S,
    ):
        self.db, self.outbox, self.bodies, self.policy = db, outbox, bodies, policy
        self.hostname, self.interval, self.retain_done_s, self.dsn_full_max = hostname, interval, retain_done_s, dsn_full_max
        self.clock, self.tls_reports = clock, tls_reports
        self.lease, self.claim_s = lease or SoleLease(), claim_s
        self._next_tls_check = 0.0
        self.wake = asyncio.Event()
        self._last_gauge = 0.0
        self._last_delay_scan = 0.0

    def poke(self) -> None:
        """Run a pass now (after results made DSNs, or an operator flushed)."""
        self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except LeaseLost as exc:
                log.warning("scheduler pass stopped: %s", exc)
            except Exception:
                log.exception("scheduler pass failed; trying again")
            self.wake.clear()
            waiter = asyncio.ensure_future(self.wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=self.interval, return_when=asyncio.FIRST_COMPLETED)
            for f in (waiter, stopper):
                f.cancel()
                with contextlib.suppress(BaseException):
                    await f

    async def decide(self, term: Term, fn: Callable[..., T], *args) -> T:
        """`fn(session, *args)` in a transaction that raises LeaseLost unless `term` still holds."""

        def fenced(s, *a):
            self.lease.fence(s, term)
            return fn(s, *a)

        return await self.db.run(fenced, *args)

    def act(self, term: Term) -> None:
        """Before each publish: LeaseLost unless `term` still holds (by this process's deadline)."""
        if not self.lease.holds(term):
            raise LeaseLost(f"term {term.token} ran out")

    async def tick(self) -> None:
        """One pass, if this process holds the lease."""
        term = self.lease.term()
        if term is None:
            return
        started = time.perf_counter()
        now = self.clock()
        while True:
            jobs, retries = await self.decide(term, ledger.take_due, now, self.policy, self.clock() + self.claim_s)
            if not jobs:
                break
            self.act(term)
            await self.outbox.publish(jobs)  # if this fails, the claim lapses: due again in claim_s
            await self.db.run(ledger.published, jobs, self.clock() + self.policy.inflight_timeout_s)
            metrics.JOBS.labels("retry").inc(retries)
            metrics.JOBS.labels("republish").inc(len(jobs) - retries)
            log.info("published due jobs", extra={"jobs": len(jobs), "retries": retries})
        if self.policy.delay_notice_s > 0 and now - self._last_delay_scan >= 30:  # hours matter, not seconds
            self._last_delay_scan = now
            await self.decide(term, ledger.make_delay_notices, now, self.policy)
        await self.finish(term)
        if self.tls_reports is not None and now >= self._next_tls_check:
            self._next_tls_check = now + TLS_REPORT_CHECK_S
            await self.send_tls_reports(term, now)
        if now - self._last_gauge >= 10:
            self._last_gauge = now
            await self.decide(term, ledger.purge_done, now - self.retain_done_s)
            for state, n in (await self.db.run(ledger.state_counts)).items():
                metrics.RECIPIENTS.labels(state).set(n)
        metrics.BATCH_SECONDS.labels("scan").observe(time.perf_counter() - started)

    async def finish(self, term: Term) -> None:
        """Send pending DSNs, then delete the bodies of messages that are done."""
        while works := await self.decide(term, ledger.pending_notices, self.policy):
            for work in works:
                await self.send_notice(term, work)
        while done := await self.decide(term, ledger.finishable):
            inline = [q for q, ref in done if is_inline(ref)]
            if inline:
                await self.decide(term, ledger.delete_inline_bodies, inline)
                metrics.BODIES_DELETED.inc(len(inline))
                done = [(q, ref) for q, ref in done if not is_inline(ref)]
                if not done:
                    continue
            self.act(term)
            results = await self.outbox.delete_bodies([ref for _, ref in done])
            gone = [q for (q, _), r in zip(done, results, strict=True) if r is None]
            if gone:
                await self.db.run(ledger.mark_bodies_deleted, gone)
                metrics.BODIES_DELETED.inc(len(gone))
            if len(gone) < len(done):
                log.warning("could not delete some bodies; will try again", extra={"failed": len(done) - len(gone)})
                break

    async def send_tls_reports(self, term: Term, now: float) -> None:
        """Each finished day's report to each domain that asks for one (RFC 8460 §3: the `_smtp._tls` TXT
        record's mailto: addresses), once: sent, or decided against (no record), or given up on when DNS
        has not answered for days. At least once: a crash after the send and before the record sends again."""
        assert self.tls_reports is not None
        rep = self.tls_reports
        today = tls_counts.utc_day(now)
        for day, domain in await self.decide(term, tls_counts.due, today):
            answer = await rep.dns.query(f"_smtp._tls.{domain}", "TXT")
            if answer.status == "temp_fail":
                if (today - date.fromisoformat(day)).days > TLS_REPORT_GIVE_UP_DAYS:
                    await self.decide(term, tls_counts.decide, day, domain, f"gave up: {answer.error or 'DNS did not answer'}", now)
                    metrics.TLS_REPORTS.labels("gave_up").inc()
                continue  # try again at the next check
            addresses = tlsrpt.parse_record(answer.records) if answer.status == "ok" else None
            if not addresses:
                await self.decide(term, tls_counts.decide, day, domain, "no record" if addresses is None else "no mailto: address", now)
                metrics.TLS_REPORTS.labels("no_record").inc()
                continue
            counts = await self.db.run(tls_counts.rows, day, domain)
            report_id = f"{day}.{domain}.{ids.ref()}@{self.hostname}"
            body = tlsrpt.report(counts, date.fromisoformat(day), domain, rep.organization, f"mailto:{rep.sender}", report_id)
            for to in addresses:
                qid = ids.queue_id()
                raw = tlsrpt.message(body, date.fromisoformat(day), domain, self.hostname, rep.sender, to, f"{qid}@{self.hostname}", datetime.now(UTC))
                self.act(term)
                if should_inline(len(raw), 1):
                    ref, inline = inline_ref(qid, len(raw)), raw
                else:
                    ref, inline = await self.bodies.put(qid, raw), None
                # the null sender, as a DSN's: a report that cannot be delivered is never bounced back
                msg = QueuedMessage(queue_id=qid, trace_id=ids.trace_id(), mail_from="", rcpt_to=[Recipient(address=to)], body_ref=ref, size=len(raw), body=inline)
                self.act(term)
                await self.outbox.inject(msg)
            await self.db.run(tls_counts.decide, day, domain, "sent to " + ", ".join(addresses), now)
            metrics.TLS_REPORTS.labels("sent").inc()
            log.info("tls report sent", extra={"day": day, "domain": domain, "to": addresses, "report_id": report_id})
        await self.decide(term, tls_counts.purge, today)

    async def send_notice(self, term: Term, work: ledger.NoticeWork) -> None:
        started = time.perf_counter()
        original = work.body
        if original is None and not work.body_deleted and not is_inline(work.body_ref):
            try:
                original = await self.bodies.get(work.body_ref)
            except BodyMissing:
                original = None
        raw = dsn.build(work, original, self.hostname, self.clock(), self.dsn_full_max)
        self.act(term)
        if should_inline(len(raw), 1):
            ref, body = inline_ref(work.dsn_queue_id, len(raw)), raw
        else:
            ref, body = await self.bodies.put(work.dsn_queue_id, raw), None
        msg = QueuedMessage(
            queue_id=work.dsn_queue_id,
            trace_id=ids.trace_id(),
            mail_from="",
            rcpt_to=[Recipient(address=work.mail_from)],
            body_ref=ref,
            size=len(raw),
            body=body,
            body_8bit=not raw.isascii(),
        )
        self.act(term)
        await self.outbox.inject(msg)
        trace = TraceEvent(
            queue_id=work.queue_id,
            trace_id=work.trace_id,
            step="bounce",
            service="queue",
            duration_ms=(time.perf_counter() - started) * 1000,
            detail=f"{work.kind} DSN {work.dsn_queue_id} to <{work.mail_from}> about "
            + ", ".join(r.address for r in work.recipients),
        )
        await self.outbox.publish([], [trace])
        await self.db.run(ledger.mark_notice_sent, work.notice_id)
        metrics.DSNS.labels(work.kind).inc()
        log.info(
            "dsn sent",
            extra={"queue_id": work.queue_id, "dsn": work.dsn_queue_id, "kind": work.kind, "to": work.mail_from},
        )
