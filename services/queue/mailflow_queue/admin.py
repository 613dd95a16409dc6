"""Queue administration over REST, in the spirit of mailq / postqueue / postsuper, and message traces.

All routes need header X-Mailflow-Admin-Token. Paths (used by `mailflow queue ...`, `mailflow trace`):
    GET    /queue?state=&sender=&recipient=&domain=&message_id=&min_age=&max_age=&offset=&limit=
                                           -> QueuePage (default: messages with recipients still queued,
           state=any: every message the queue still keeps);
           sender and recipient match whole addresses and domain the recipients' domain (all without regard
           to case, compared as text: no pattern from the client), ages are seconds since it was received
    GET    /queue/counts                   -> Counts (recipients per state, active messages)
    GET    /queue/{queue_id}               -> MessageView | 404
    GET    /queue/{queue_id}/headers       -> Headers | 404 (its header fields, while the body is kept)
    POST   /queue/flush                    -> Changed (every deferred recipient is due now)
    POST   /queue/{queue_id}/retry         -> Changed | 404 (its deferred and held recipients are due now)
    POST   /queue/{queue_id}/hold          -> Changed | 404 (no more attempts until released)
    POST   /queue/{queue_id}/release       -> Changed | 404
    DELETE /queue/{queue_id}               -> 204 | 404 (silently: no DSN; the body goes too)
    GET    /trace/{queue_id}               -> list[TraceEvent] in the order the steps began (stream TRACE)
A database or NATS failure is a 503 with a short reason; details go to the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Query, Response
from nats.js import JetStreamContext
from pydantic import BaseModel
from sqlalchemy.orm import Session

from mailflow.bodies import Bodies, BodyMissing, is_inline
from mailflow.contracts import subjects
from mailflow.contracts.messages import TraceEvent
from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.web import require_token
from mailflow_queue import db
from mailflow_queue.db import ACTIVE, DEFERRED, HELD, QUEUED, STATES, Database, Message, Recipient
from mailflow_queue.ledger import ts_to_dt

log = logging.getLogger(__name__)


class RecipientView(BaseModel):
    address: str
    state: str
    attempts: int
    next_attempt_at: datetime | None = None
    last_status: str = ""
    last_error: str = ""
    remote_mta: str | None = None
    notify: list[str] = []
    orcpt: str | None = None
    forwarded_for: str | None = None  # the local alias this external target came from
    updated_at: datetime | None = None


class MessageView(BaseModel):
    queue_id: str
    trace_id: str
    mail_from: str
    size: int
    received_at: datetime
    envid: str | None = None
    ret: str | None = None
    message_id: str = ""
    client_ip: str | None = None
    auth_user: str | None = None
    done_at: datetime | None = None
    body_deleted: bool = False
    recipients: list[RecipientView]


class QueuePage(BaseModel):
    items: list[MessageView]
    total: int
    offset: int
    limit: int


class Counts(BaseModel):
    states: dict[str, int]
    messages: int  # messages with at least one recipient not final


class Changed(BaseModel):
    count: int  # recipients changed


def _view(m: Message, rs: list[Recipient]) -> MessageView:
    return MessageView(
        queue_id=m.queue_id,
        trace_id=m.trace_id,
        mail_from=m.mail_from,
        size=m.size,
        received_at=ts_to_dt(m.received_at),
        envid=m.envid,
        ret=m.ret,
        message_id=m.message_id,
        client_ip=m.client_ip,
        auth_user=m.auth_user,
        done_at=ts_to_dt(m.done_at) if m.done_at else None,
        body_deleted=m.body_deleted,
        recipients=[
            RecipientView(
                address=r.address,
                state=r.state,
                attempts=r.attempts,
                next_attempt_at=ts_to_dt(r.next_attempt_at) if r.next_attempt_at else None,
                last_status=r.last_status,
                last_error=r.last_error,
                remote_mta=r.remote_mta,
                notify=[n for n in r.notify.split(",") if n],
                orcpt=r.orcpt,
                forwarded_for=r.forwarded_for,
                updated_at=ts_to_dt(r.updated_at),
            )
            for r in rs
        ],
    )


# --- database operations (each one transaction) -----------------------------------------------


FEW = 5000  # matches that list_messages fetches by id rather than in arrival order


@dataclass(frozen=True)
class Filters:
    """What GET /queue narrows the list by; empty fields do not narrow it."""

    sender: str = ""  # the whole envelope sender, any case ("<>" for the null sender)
    message_id: str = ""  # the Message-ID header's value, exactly (with or without its <>)
    recipient: str = ""  # one recipient's whole address, any case
    domain: str = ""  # one recipient's domain, any case
    min_age: float | None = None  # received at least this many seconds ago
    max_age: float | None = None  # received at most this many seconds ago


def list_messages(s: Session, state: str | None, offset: int, limit: int, f: Filters = Filters(), now: float = 0.0) -> QueuePage:
    rcpt = [] if state == "any" else [Recipient.state.in_((state,) if state else ACTIVE)]
    if f.recipient:
        rcpt.append(Recipient.address_key == f.recipient.lower())
    if f.domain:
        # a suffix compared as text (LIKE with every wildcard of the input escaped): "@example.test"
        rcpt.append(Recipient.address_key.endswith("@" + f.domain.lower().rstrip("."), autoescape=True))
    where = []
    if f.sender:
        where.append(sa.func.lower(Message.mail_from) == ("" if f.sender == "<>" else f.sender.lower()))
    if f.message_id:
        bare = f.message_id.strip().removeprefix("<").removesuffix(">")
        where.append(Message.message_id.in_((f"<{bare}>"[: db.MESSAGE_ID_CHARS], bare[: db.MESSAGE_ID_CHARS])))
    if f.min_age is not None:
        where.append(Message.received_at <= now - f.min_age)
    if f.max_age is not None:
        where.append(Message.received_at >= now - f.max_age)
    if rcpt and not where:
        # Only recipients' conditions: counted on the recipients' index alone. A few matches are fetched
        # by id (IN) and sorted; many by walking the messages in arrival order (EXISTS), which stops at the
        # page (measured on SQLite with 100,000 messages: either way round is 5-10x slower).
        total = s.scalar(sa.select(sa.func.count(sa.distinct(Recipient.queue_id))).where(*rcpt)) or 0
        if total <= FEW:
            where.append(Message.queue_id.in_(sa.select(Recipient.queue_id).where(*rcpt)))
        else:
            where.append(sa.exists().where(Recipient.queue_id == Message.queue_id, *rcpt))
    else:
        if rcpt:
            where.append(Message.queue_id.in_(sa.select(Recipient.queue_id).where(*rcpt)))
        total = s.scalar(sa.select(sa.func.count()).select_from(Message).where(*where)) or 0
    q = sa.select(Message).where(*where)
    if offset > total // 2:  # a page near the end is read from the end: an OFFSET costs what it skips
        skip, take = max(0, total - offset - limit), max(0, min(limit, total - offset))
        msgs = s.scalars(q.order_by(Message.received_at.desc(), Message.queue_id.desc()).offset(skip).limit(take)).all()[::-1]
    else:
        msgs = s.scalars(q.order_by(Message.received_at, Message.queue_id).offset(offset).limit(limit)).all()
    by: dict[str, list[Recipient]] = {m.queue_id: [] for m in msgs}
    if by:
        for r in s.scalars(sa.select(Recipient).where(Recipient.queue_id.in_(list(by))).order_by(Recipient.id)):
            by[r.queue_id].append(r)
    return QueuePage(items=[_view(m, by[m.queue_id]) for m in msgs], total=total, offset=offset, limit=limit)


def show(s: Session, queue_id: str) -> MessageView | None:
    m = s.get(Message, queue_id)
    if m is None:
        return None
    rs = s.scalars(sa.select(Recipient).where(Recipient.queue_id == queue_id).order_by(Recipient.id)).all()
    return _view(m, list(rs))


def counts(s: Session) -> Counts:
    states = dict.fromkeys(STATES, 0)
    for st, n in s.execute(sa.select(Recipient.state, sa.func.count()).group_by(Recipient.state)):
        states[st] = n
    active = s.scalar(
        sa.select(sa.func.count(sa.distinct(Recipient.queue_id))).where(Recipient.state.in_(ACTIVE))
    )
    return Counts(states=states, messages=active or 0)


def _set(s: Session, now: float, where, **values) -> int:
    res = s.execute(sa.update(Recipient).where(*where).values(updated_at=now, **values))
    return res.rowcount or 0


def flush(s: Session, now: float) -> int:
    return _set(s, now, [Recipient.state == DEFERRED], state=QUEUED, next_attempt_at=now)


def retry(s: Session, queue_id: str, now: float) -> int | None:
    if s.get(Message, queue_id) is None:
        return None
    where = [Recipient.queue_id == queue_id, Recipient.state.in_((DEFERRED, HELD, QUEUED))]
    return _set(s, now, where, state=QUEUED, next_attempt_at=now)


def hold(s: Session, queue_id: str, now: float) -> int | None:
    if s.get(Message, queue_id) is None:
        return None
    return _set(s, now, [Recipient.queue_id == queue_id, Recipient.state.in_((QUEUED, DEFERRED, db.INFLIGHT))], state=HELD)


def release(s: Session, queue_id: str, now: float) -> int | None:
    if s.get(Message, queue_id) is None:
        return None
    return _set(s, now, [Recipient.queue_id == queue_id, Recipient.state == HELD], state=QUEUED, next_attempt_at=now)


def delete(s: Session, queue_id: str) -> str | None:
    """Remove the message and its recipients; returns its body ref (None if unknown)."""
    m = s.get(Message, queue_id)
    if m is None:
        return None
    ref = None if m.body_deleted or is_inline(m.body_ref) else m.body_ref  # an inline body goes with the rows
    s.execute(sa.delete(db.Notice).where(db.Notice.queue_id == queue_id, db.Notice.sent.is_(False)))
    s.execute(sa.delete(db.Body).where(db.Body.queue_id == queue_id))
    s.execute(sa.delete(Recipient).where(Recipient.queue_id == queue_id))
    s.execute(sa.delete(Message).where(Message.queue_id == queue_id))
    return ref or ""


MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_FIELDS = 500
MAX_FIELD_CHARS = 4000


class Headers(BaseModel):
    fields: list[tuple[str, str]]  # (name, value unfolded), in order
    kept: bool = True  # False: the body is gone (the message is final), so are its headers


def body_of(s: Session, queue_id: str) -> tuple[str | None, bytes | None] | None:
    """(body ref, inline bytes) of a known message; ref None once the body is gone; None if unknown."""
    m = s.get(Message, queue_id)
    if m is None:
        return None
    if m.body_deleted:
        return (None, None)
    row = s.get(db.Body, queue_id) if is_inline(m.body_ref) else None
    if is_inline(m.body_ref) and row is None:
        return (None, None)
    return (m.body_ref, row.data if row is not None else None)


def header_fields(data: bytes) -> list[tuple[str, str]]:
    """The header block's fields, unfolded; at most MAX_HEADER_BYTES read, MAX_HEADER_FIELDS fields of
    MAX_FIELD_CHARS characters (bytes that are not UTF-8 replaced). Line by line, no regex."""
    head = data[:MAX_HEADER_BYTES]
    end = head.find(b"\r\n\r\n")
    head = b"" if head.startswith(b"\r\n") else head if end < 0 else head[: end + 2]
    out: list[list[str]] = []
    for line in head.decode("utf-8", "replace").split("\r\n"):
        if line[:1] in (" ", "\t") and out:
            out[-1][1] = (out[-1][1] + " " + line.strip())[:MAX_FIELD_CHARS]
        elif ":" in line and len(out) < MAX_HEADER_FIELDS:
            name, _, value = line.partition(":")
            out.append([name.strip()[:200], value.strip()[:MAX_FIELD_CHARS]])
    return [(n, v) for n, v in out]


# --- traces -----------------------------------------------------------------------------------


async def read_trace(js: JetStreamContext, queue_id: str, wait: float = 2.0) -> list[TraceEvent]:
    subject = subjects.trace(queue_id)
    info = await js.stream_info("TRACE", subjects_filter=subject)
    want = (info.state.subjects or {}).get(subject, 0)
    if not want:
        return []
    sub = await js.subscribe(subject, stream="TRACE", ordered_consumer=True)
    events: list[TraceEvent] = []
    try:
        while len(events) < want:
            msg = await sub.next_msg(timeout=wait)
            try:
                events.append(TraceEvent.from_bytes(msg.data))
            except ValueError:
                want -= 1
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    events.sort(key=started)
    return events


def started(e: TraceEvent) -> datetime:
    """When a step began: an event is stamped (`at`) when its step ends. Steps overlap (the queue
    hands out jobs while it commits), so the journey reads in the order the steps began."""
    return e.at - timedelta(milliseconds=e.duration_ms)


# --- routes -----------------------------------------------------------------------------------


def router(database: Database, js: JetStreamContext, bodies: Bodies, admin_token: str, poke: Callable[[], None], clock: Callable[[], float] = time.time) -> APIRouter:
    r = APIRouter(dependencies=[Depends(require_token(ADMIN_TOKEN_HEADER, admin_token))], tags=["queue"])

    async def run(fn, *args):
        try:
            return await database.run(fn, *args)
        except Exception as exc:
            log.exception("admin database call failed")
            raise HTTPException(503, "queue database unavailable") from exc

    def found(value, queue_id: str):
        if value is None:
            raise HTTPException(404, f"no message {queue_id} in the queue")
        return value

    @r.get("/queue")
    async def list_queue(
        state: str | None = Query(None, pattern="^(" + "|".join((*STATES, "any")) + ")$"),
        sender: str = Query("", max_length=512),
        recipient: str = Query("", max_length=512),
        domain: str = Query("", max_length=255),
        message_id: str = Query("", max_length=1000),
        min_age: float | None = Query(None, ge=0, le=10 * 365 * 86400),
        max_age: float | None = Query(None, ge=0, le=10 * 365 * 86400),
        offset: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=1000),
    ) -> QueuePage:
        f = Filters(sender=sender.strip(), message_id=message_id.strip(), recipient=recipient.strip(), domain=domain.strip(),
                    min_age=min_age, max_age=max_age)  # fmt: skip
        return await run(list_messages, state, offset, limit, f, clock())

    @r.get("/queue/counts")
    async def get_counts() -> Counts:
        return await run(counts)

    @r.post("/queue/flush")
    async def post_flush() -> Changed:
        n = await run(flush, clock())
        poke()
        return Changed(count=n)

    @r.get("/queue/{queue_id}")
    async def get_message(queue_id: str) -> MessageView:
        return found(await run(show, queue_id), queue_id)

    @r.get("/queue/{queue_id}/headers")
    async def get_headers(queue_id: str) -> Headers:
        """The message's header fields while the queue keeps its body (until every recipient is final)."""
        m = found(await run(body_of, queue_id), queue_id)
        ref, inline = m
        if ref is None:
            return Headers(fields=[], kept=False)
        try:
            data = inline if inline is not None else await bodies.get(ref)
        except BodyMissing:
            return Headers(fields=[], kept=False)
        except Exception as exc:
            log.warning("body not read for its headers: %s", exc, extra={"queue_id": queue_id})
            raise HTTPException(503, "message body store did not answer") from exc
        return Headers(fields=header_fields(data))

    @r.post("/queue/{queue_id}/retry")
    async def post_retry(queue_id: str) -> Changed:
        n = found(await run(retry, queue_id, clock()), queue_id)
        poke()
        return Changed(count=n)

    @r.post("/queue/{queue_id}/hold")
    async def post_hold(queue_id: str) -> Changed:
        return Changed(count=found(await run(hold, queue_id, clock()), queue_id))

    @r.post("/queue/{queue_id}/release")
    async def post_release(queue_id: str) -> Changed:
        n = found(await run(release, queue_id, clock()), queue_id)
        poke()
        return Changed(count=n)

    @r.delete("/queue/{queue_id}", status_code=204)
    async def delete_message(queue_id: str) -> Response:
        ref = found(await run(delete, queue_id), queue_id)
        if ref:
            try:
                await bodies.delete(ref)
            except Exception:
                log.warning("body of a deleted message stays until it expires", extra={"queue_id": queue_id})
        log.info("deleted by operator", extra={"queue_id": queue_id})
        return Response(status_code=204)

    @r.get("/trace/{queue_id}")
    async def get_trace(queue_id: str) -> list[TraceEvent]:
        if not queue_id.replace("-", "").isalnum():
            raise HTTPException(422, "not a queue id")
        try:
            return await read_trace(js, queue_id)
        except TimeoutError as exc:
            raise HTTPException(503, "trace stream did not answer") from exc

    return r
