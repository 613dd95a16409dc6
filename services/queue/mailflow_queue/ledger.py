"""What the queue decides, as database transactions: no NATS, no clock of its own, no globals.

Every function takes a SQLAlchemy `Session` inside an open transaction (see `db.Database.run`) and
returns plain data for the caller to publish *after* the commit. Whatever it returns can be
published again safely: jobs carry a Nats-Msg-Id and delivery is idempotent; DSNs have a fixed
queue id, which intake records once. If a transaction fails, nothing changed and the caller has
acknowledged nothing, so the same input comes again.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace as Row  # a table row not loaded through the ORM: the same attribute names

import sqlalchemy as sa
from sqlalchemy.orm import Session

from mailflow import ids
from mailflow.bodies import is_inline
from mailflow.contracts.messages import DeliveryJob, DeliveryResult, QueuedMessage
from mailflow.contracts.messages import Recipient as Rcpt
from mailflow_queue import db, tls_counts
from mailflow_queue.db import (
    ACTIVE,
    BOUNCED,
    DEFERRED,
    DELIVERED,
    FINAL,
    HELD,
    INFLIGHT,
    QUEUED,
    Body,
    Message,
    Notice,
    Recipient,
)

EXPIRED_STATUS = "4.4.7"  # RFC 3463: delivery time expired


@dataclass(frozen=True)
class Policy:
    first_retry_s: float = 60.0
    max_retry_s: float = 3600.0
    jitter: float = 0.15
    max_lifetime_s: float = 5 * 86400.0
    delay_notice_s: float = 4 * 3600.0
    inflight_timeout_s: float = 1800.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def retry_delay(self, attempts: int) -> float:
        """~1 min after the first attempt, doubling, capped; jitter spreads retries of a burst."""
        base = min(self.max_retry_s, self.first_retry_s * 2 ** max(0, attempts - 1))
        return max(1.0, base * (1 + self.rng.uniform(-self.jitter, self.jitter)))


def ts_to_dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def wants(notify: str, kind: str) -> bool:
    """RFC 3461 §4.1: NOTIFY not given means failures (and, at our discretion, delays) only."""
    given = set(filter(None, notify.split(",")))
    if "NEVER" in given:
        return False
    if not given:
        return kind in ("FAILURE", "DELAY")
    return kind in given


def job_for(m: Message | Row, r: Recipient | Row, body: bytes | None) -> DeliveryJob:
    """The one place a job is made: from a messages row and a recipients row (loaded, or the rows
    `record` inserts) and the message's inline body (None: the body is in stream BODY)."""
    return DeliveryJob(
        queue_id=m.queue_id,
        trace_id=m.trace_id,
        attempt=r.attempts,
        mail_from=m.mail_from,
        rcpt=Rcpt(
            address=r.address, notify=[n for n in r.notify.split(",") if n], orcpt=r.orcpt, forwarded_for=r.forwarded_for
        ),
        body_ref=m.body_ref,
        size=m.size,
        body=body,
        received_at=ts_to_dt(m.received_at),
        envid=m.envid,
        ret=m.ret,
        body_8bit=m.body_8bit,
        smtputf8=m.smtputf8,
        requiretls=m.requiretls,
        dkim=signs(m),
        junk=m.junk,
    )


def signs(m: Message | Row) -> bool:
    """Mail leaves DKIM-signed when a user submitted it after AUTH, or Mailflow made it (a DSN: no
    client); mail relayed for anyone else (an MX client) is never signed with our keys."""
    return m.auth_user is not None or m.client_ip is None


# --- intake -----------------------------------------------------------------------------------


@dataclass
class Recorded:
    jobs: list[DeliveryJob]
    new: list[str]  # queue ids recorded now
    duplicates: list[str]  # queue ids known already (a redelivery after a crash)


def unique_rcpts(qm: QueuedMessage) -> list[Rcpt]:
    """The envelope's recipients, each once (the same address twice in one envelope gets one copy)."""
    seen: dict[str, Rcpt] = {}
    for rc in qm.rcpt_to:
        seen.setdefault(rc.address.lower(), rc)
    return list(seen.values())


def new_rows(qm: QueuedMessage, now: float, p: Policy) -> tuple[Row, list[Row]]:
    """The messages row and the recipients rows a new message gets: every recipient in flight, attempt 1."""
    rcpts = unique_rcpts(qm)
    m = Row(
        queue_id=qm.queue_id,
        trace_id=qm.trace_id,
        mail_from=qm.mail_from,
        body_ref=qm.body_ref,
        size=qm.size,
        received_at=qm.received_at.timestamp(),
        envid=qm.envid,
        ret=qm.ret,
        body_8bit=qm.body_8bit,
        smtputf8=qm.smtputf8,
        client_ip=qm.client.ip if qm.client else None,
        auth_user=qm.client.auth_user if qm.client else None,
        body_deleted=False,
        junk=qm.junk,
        requiretls=qm.requiretls,
        message_id=qm.message_id[: db.MESSAGE_ID_CHARS],
        done_at=None if rcpts else now,
    )
    rs = [
        Row(
            queue_id=qm.queue_id,
            address=rc.address,
            address_key=rc.address.lower(),
            notify=",".join(rc.notify),
            orcpt=rc.orcpt,
            forwarded_for=rc.forwarded_for,
            state=INFLIGHT,
            attempts=1,
            next_attempt_at=now + p.inflight_timeout_s,
            last_status="",
            last_error="",
            remote_mta=None,
            updated_at=now,
            delay_notified=False,
        )
        for rc in rcpts
    ]
    return m, rs


def first_jobs(msgs: list[QueuedMessage], now: float, p: Policy) -> list[DeliveryJob]:
    """The jobs `record` makes for new messages, from the same rows but without the database: intake
    publishes them while the transaction commits."""
    out, seen = [], set()
    for qm in msgs:
        if qm.queue_id not in seen:
            seen.add(qm.queue_id)
            m, rs = new_rows(qm, now, p)
            out += [job_for(m, r, qm.body) for r in rs]
    return out


def record(s: Session, msgs: list[QueuedMessage], now: float, p: Policy) -> Recorded:
    """Record new messages with every recipient in flight (attempt 1) and return their jobs. A message
    known already returns the jobs of its recipients still in flight, to publish again. An inline body
    is kept in table bodies until the message is final.
    Plain multi-row INSERTs (no ORM unit of work): this is the hot path."""
    qids = list(dict.fromkeys(m.queue_id for m in msgs))
    known = set(s.scalars(sa.select(Message.queue_id).where(Message.queue_id.in_(qids))))
    out = Recorded([], [], [])
    seen: set[str] = set()
    m_rows, r_rows, b_rows = [], [], []
    for qm in msgs:
        if qm.queue_id in seen:
            continue
        seen.add(qm.queue_id)
        if qm.queue_id in known:
            out.duplicates.append(qm.queue_id)
            continue
        m, rs = new_rows(qm, now, p)
        m_rows.append(vars(m))
        r_rows += [vars(r) for r in rs]
        out.jobs += [job_for(m, r, qm.body) for r in rs]
        if qm.body is not None:
            b_rows.append(dict(queue_id=qm.queue_id, data=qm.body))
        out.new.append(qm.queue_id)
    if m_rows:
        s.execute(sa.insert(Message.__table__), m_rows)
    if r_rows:
        s.execute(sa.insert(Recipient.__table__), r_rows)
    if b_rows:
        s.execute(sa.insert(Body.__table__), b_rows)
    if out.duplicates:
        rows = s.execute(
            sa.select(Message, Recipient, Body.data)
            .join(Recipient, Recipient.queue_id == Message.queue_id)
            .outerjoin(Body, Body.queue_id == Message.queue_id)
            .where(Message.queue_id.in_(out.duplicates), Recipient.state == INFLIGHT)
        ).all()
        out.jobs += [job_for(m, r, body) for m, r, body in rows]
    return out


# --- results ----------------------------------------------------------------------------------


class NotRecorded(Exception):
    """A first attempt's result for a message that is not recorded (yet): its intake transaction is
    still running in another queue process, or failed there after its jobs went out. Try it later."""


@dataclass
class Applied:
    counts: dict[str, int]
    notices: int  # DSNs to make (see pending_notices)
    done: int  # messages now final
    stale: list[int] = field(default_factory=list)  # indexes of results that changed nothing
    tls_sessions: int = 0  # TLS-RPT sessions counted
    latencies: list[float] = field(default_factory=list)  # seconds from accepted to delivered, per recipient


@dataclass
class _Row:
    id: int
    queue_id: str
    address_key: str
    notify: str
    state: str
    attempts: int
    remote_mta: str | None


def apply_results(s: Session, results: list[DeliveryResult], now: float, p: Policy, unrecorded_s: float = 120.0) -> Applied:
    """One SELECT for the rows concerned, one executemany UPDATE: this is the hot path.
    A message's first jobs go out while its intake transaction commits, in whichever queue process
    took it: a first attempt's result made less than `unrecorded_s` ago for a message not recorded
    raises NotRecorded (nothing applied); any other result for an unknown message is stale (deleted
    meanwhile, or its commit never came).
    DSNs: a failure one for bounced recipients that want it; a success one (NOTIFY=SUCCESS) only if the
    message came from an authenticated submission. Anyone can put any sender and NOTIFY=SUCCESS on mail
    to our MX: a success DSN for it would go to a forged sender (backscatter), so it is never made."""
    qids = list({r.queue_id for r in results})
    msgs = {
        q: (mail_from, received_at, auth_user)
        for q, mail_from, received_at, auth_user in s.execute(
            sa.select(Message.queue_id, Message.mail_from, Message.received_at, Message.auth_user).where(Message.queue_id.in_(qids))
        )
    }
    if early := sorted({r.queue_id for r in results if r.queue_id not in msgs and r.attempt == 1 and abs(now - r.at.timestamp()) < unrecorded_s}):
        raise NotRecorded(f"not recorded (yet): {', '.join(early[:3])}")
    cols = (Recipient.id, Recipient.queue_id, Recipient.address_key, Recipient.notify, Recipient.state, Recipient.attempts, Recipient.remote_mta)
    rows = {(r.queue_id, r.address_key): r for r in (_Row(*t) for t in s.execute(sa.select(*cols).where(Recipient.queue_id.in_(qids))))}
    counts: dict[str, int] = defaultdict(int)
    bounced: dict[str, list[_Row]] = defaultdict(list)
    delivered: dict[str, list[_Row]] = defaultdict(list)
    updates: dict[int, dict] = {}
    stale: list[int] = []
    with_tls: list[DeliveryResult] = []  # TLS-RPT: sessions of results that are news, not of stale ones
    latencies: list[float] = []
    for n, res in enumerate(results):
        r = rows.get((res.queue_id, res.rcpt.lower())) if res.queue_id in msgs else None
        if r is None or r.state in FINAL:
            stale.append(n)  # deleted meanwhile, or an old attempt's answer
            continue
        if res.outcome == "deferred" and r.state == INFLIGHT and res.attempt < r.attempts:
            stale.append(n)  # a newer attempt is out already
            continue
        if res.tls is not None:
            with_tls.append(res)
        # a remote server's reply may hold NUL, which PostgreSQL text refuses: the whole batch would fail
        status, error, nxt = res.status.replace("\0", ""), res.diagnostic.replace("\0", "")[:2000], None
        if res.outcome == "delivered":
            r.state = DELIVERED
            delivered[r.queue_id].append(r)
            counts["delivered"] += 1
            latencies.append(max(0.0, now - msgs[r.queue_id][1]))
        elif res.outcome == "bounced":
            r.state = BOUNCED
            bounced[r.queue_id].append(r)
            counts["bounced"] += 1
        else:
            expires = msgs[r.queue_id][1] + p.max_lifetime_s
            if now >= expires:
                error = f"gave up after {r.attempts} attempts: {status} {error}"[:2000]
                r.state, status = BOUNCED, EXPIRED_STATUS
                bounced[r.queue_id].append(r)
                counts["expired"] += 1
            else:
                nxt = min(now + p.retry_delay(r.attempts), expires)
                if r.state != HELD:
                    r.state = DEFERRED
                counts["deferred"] += 1
        r.remote_mta = res.remote_mta or r.remote_mta
        updates[r.id] = dict(
            rid=r.id, state=r.state, next_attempt_at=nxt, last_status=status, last_error=error, remote_mta=r.remote_mta, updated_at=now
        )
    if updates:
        t = Recipient.__table__
        s.execute(
            sa.update(t)
            .where(t.c.id == sa.bindparam("rid"))
            .values(
                state=sa.bindparam("state"),
                next_attempt_at=sa.bindparam("next_attempt_at"),
                last_status=sa.bindparam("last_status"),
                last_error=sa.bindparam("last_error"),
                remote_mta=sa.bindparam("remote_mta"),
                updated_at=sa.bindparam("updated_at"),
            ),
            sorted(updates.values(), key=lambda u: u["rid"]),  # one lock order for every replica
        )
    notices = 0
    for qid, rs in bounced.items():
        notices += _notice(s, qid, msgs[qid][0], [r.id for r in rs if wants(r.notify, "FAILURE")], "failure", now)
    for qid, rs in delivered.items():
        if msgs[qid][2] is not None:  # success DSNs for authenticated submissions only: no backscatter
            notices += _notice(s, qid, msgs[qid][0], [r.id for r in rs if wants(r.notify, "SUCCESS")], "success", now)
    done = _mark_done(s, set(bounced) | set(delivered), now)
    sessions = tls_counts.count(s, with_tls) if with_tls else 0
    if stale:
        counts["stale"] = len(stale)
    return Applied(dict(counts), notices, done, stale, sessions, latencies)


def _notice(s: Session, queue_id: str, mail_from: str, recipient_ids: list[int], kind: str, now: float) -> int:
    """Never a DSN about a DSN: a message from the null sender gets none (RFC 3461 §6.2, RFC 5321 §4.5.5)."""
    if not recipient_ids or mail_from == "":
        return 0
    s.add(
        Notice(
            queue_id=queue_id,
            dsn_queue_id=ids.queue_id(),
            kind=kind,
            recipient_ids=json.dumps(recipient_ids),
            sent=False,
            created_at=now,
        )
    )
    return 1


def _mark_done(s: Session, qids: set[str], now: float) -> int:
    """Messages whose recipients are all final are done. An inline body goes in the same transaction
    unless a DSN still needs it (the scheduler deletes it once the DSN is out, see `finishable`)."""
    if not qids:
        return 0
    s.flush()
    active = set(
        s.scalars(sa.select(Recipient.queue_id).where(Recipient.queue_id.in_(qids), Recipient.state.in_(ACTIVE)))
    )
    finished = [q for q in qids if q not in active]
    if finished:
        s.execute(
            sa.update(Message).where(Message.queue_id.in_(finished), Message.done_at.is_(None)).values(done_at=now)
        )
        waiting = set(s.scalars(sa.select(Notice.queue_id).where(Notice.queue_id.in_(finished), Notice.sent.is_(False))))
        free = [q for q in finished if q not in waiting]
        if free:
            inline = list(s.scalars(sa.select(Body.queue_id).where(Body.queue_id.in_(free))))
            if inline:
                s.execute(sa.delete(Body).where(Body.queue_id.in_(inline)))
                s.execute(sa.update(Message).where(Message.queue_id.in_(inline)).values(body_deleted=True))
    return len(finished)


# --- scheduler --------------------------------------------------------------------------------


def take_due(s: Session, now: float, p: Policy, claim_until: float, limit: int = 500) -> tuple[list[DeliveryJob], int]:
    """Due retries (and jobs unanswered past the in-flight timeout) -> in flight, claimed until
    `claim_until`: the caller publishes them and then calls `published`; if it never does (its publish
    failed, it died, it lost the scheduler lease), they are due again then, with the same attempt.
    SKIP LOCKED: a row another scheduler is claiming at this moment is left to it. Returns (jobs, retries)."""
    rows = s.execute(
        sa.select(Message, Recipient, Body.data)
        .join(Recipient, Recipient.queue_id == Message.queue_id)
        .outerjoin(Body, Body.queue_id == Message.queue_id)
        .where(Recipient.state.in_((QUEUED, DEFERRED, INFLIGHT)), Recipient.next_attempt_at <= now)
        .order_by(Recipient.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=Recipient)
    ).all()
    jobs, retries = [], 0
    for m, r, body in rows:
        if r.state != INFLIGHT:
            r.attempts += 1
            retries += 1
        r.state, r.next_attempt_at, r.updated_at = INFLIGHT, claim_until, now
        jobs.append(job_for(m, r, body))
    return jobs, retries


def published(s: Session, jobs: list[DeliveryJob], at: float) -> None:
    """Jobs taken by `take_due` are out (PubAck'ed): still in flight, due again only at `at` (the
    in-flight timeout) unless answered first. A recipient answered meanwhile, or taken again by a later
    attempt, is left alone."""
    t = Recipient.__table__
    s.execute(
        sa.update(t)
        .where(t.c.queue_id == sa.bindparam("q"), t.c.address_key == sa.bindparam("k"), t.c.state == INFLIGHT, t.c.attempts == sa.bindparam("a"))
        .values(next_attempt_at=at),
        [{"q": j.queue_id, "k": j.rcpt.address.lower(), "a": j.attempt} for j in jobs],
    )


def make_delay_notices(s: Session, now: float, p: Policy, limit: int = 500) -> int:
    if p.delay_notice_s <= 0:
        return 0
    rows = s.execute(
        sa.select(Message, Recipient)
        .join(Recipient, Recipient.queue_id == Message.queue_id)
        .where(
            Recipient.state.in_(ACTIVE),
            Recipient.last_status != "",  # deferred at least once
            Recipient.delay_notified.is_(False),
            Message.received_at <= now - p.delay_notice_s,
        )
        .limit(limit)
        .with_for_update(skip_locked=True, of=Recipient)  # a recipient gets one delay notice
    ).all()
    per: dict[str, tuple[Message, list[Recipient]]] = {}
    for m, r in rows:
        r.delay_notified = True
        if wants(r.notify, "DELAY"):
            per.setdefault(m.queue_id, (m, []))[1].append(r)
    return sum(_notice(s, m.queue_id, m.mail_from, [r.id for r in rs], "delay", now) for m, rs in per.values())


@dataclass(frozen=True)
class NoticeRecipient:
    address: str
    orcpt: str | None
    state: str
    status: str
    diagnostic: str
    remote_mta: str | None
    last_attempt_at: float


@dataclass(frozen=True)
class NoticeWork:
    notice_id: int
    kind: str
    dsn_queue_id: str
    queue_id: str
    trace_id: str
    mail_from: str
    body_ref: str
    body_deleted: bool
    size: int
    received_at: float
    envid: str | None
    ret: str | None
    will_retry_until: float
    recipients: list[NoticeRecipient]
    body: bytes | None = None  # the original's inline body, if it has one and it is still kept


def pending_notices(s: Session, p: Policy, limit: int = 100) -> list[NoticeWork]:
    out = []
    for n in s.scalars(sa.select(Notice).where(Notice.sent.is_(False)).order_by(Notice.id).limit(limit)):
        m = s.get(Message, n.queue_id)
        if m is None:  # deleted by an operator meanwhile
            n.sent = True
            continue
        rids = json.loads(n.recipient_ids)
        rs = s.scalars(sa.select(Recipient).where(Recipient.id.in_(rids)).order_by(Recipient.id)).all()
        out.append(
            NoticeWork(
                notice_id=n.id,
                kind=n.kind,
                dsn_queue_id=n.dsn_queue_id,
                queue_id=m.queue_id,
                trace_id=m.trace_id,
                mail_from=m.mail_from,
                body_ref=m.body_ref,
                body_deleted=m.body_deleted,
                size=m.size,
                received_at=m.received_at,
                envid=m.envid,
                # RFC 8689 §5: the notice may travel where TLS is not required; it never carries the body
                ret="HDRS" if m.requiretls else m.ret,
                will_retry_until=m.received_at + p.max_lifetime_s,
                recipients=[
                    NoticeRecipient(r.address, r.orcpt, r.state, r.last_status, r.last_error, r.remote_mta, r.updated_at)
                    for r in rs
                ],
                body=s.scalar(sa.select(Body.data).where(Body.queue_id == m.queue_id)) if is_inline(m.body_ref) else None,
            )
        )
    return out


def mark_notice_sent(s: Session, notice_id: int) -> None:
    s.execute(sa.update(Notice).where(Notice.id == notice_id).values(sent=True))


def finishable(s: Session, limit: int = 500) -> list[tuple[str, str]]:
    """(queue_id, body_ref) of finished messages whose DSNs are out and whose body is still stored
    (in stream BODY, or inline in table bodies: `delete_inline_bodies`)."""
    unsent = sa.select(Notice.queue_id).where(Notice.sent.is_(False))
    rows = s.execute(
        sa.select(Message.queue_id, Message.body_ref)
        .where(Message.done_at.is_not(None), Message.body_deleted.is_(False), Message.queue_id.not_in(unsent))
        .limit(limit)
    ).all()
    return [(q, b) for q, b in rows]


def mark_bodies_deleted(s: Session, qids: list[str]) -> None:
    s.execute(sa.update(Message).where(Message.queue_id.in_(qids)).values(body_deleted=True))


def delete_inline_bodies(s: Session, qids: list[str]) -> None:
    s.execute(sa.delete(Body).where(Body.queue_id.in_(qids)))
    mark_bodies_deleted(s, qids)


def purge_done(s: Session, before: float) -> int:
    qids = list(
        s.scalars(
            sa.select(Message.queue_id)
            .where(Message.done_at < before, Message.body_deleted.is_(True))
            .limit(1000)
        )
    )
    if qids:
        s.execute(sa.delete(Notice).where(Notice.queue_id.in_(qids)))
        s.execute(sa.delete(Body).where(Body.queue_id.in_(qids)))
        s.execute(sa.delete(Recipient).where(Recipient.queue_id.in_(qids)))
        s.execute(sa.delete(Message).where(Message.queue_id.in_(qids)))
    return len(qids)


def state_counts(s: Session) -> dict[str, int]:
    counts = dict.fromkeys(db.STATES, 0)
    for state, n in s.execute(sa.select(Recipient.state, sa.func.count()).group_by(Recipient.state)):
        counts[state] = n
    return counts
