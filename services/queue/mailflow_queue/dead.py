"""What the workers gave up on: the letters in stream DEAD, for an operator (`mailflow dead ...`).

A worker moves a message to DEAD (subject mail.dead) when its payload does not decode or when it
failed its last attempt (mailflow.worker); the letter keeps the original payload, subject and
headers with the reason. A letter is named by its sequence number in DEAD. All routes need header
X-Mailflow-Admin-Token:
    GET    /dead?after=&limit=   -> DeadPage: the letters after sequence `after`, oldest first
    GET    /dead/{seq}           -> DeadView | 404: reason, service, subject, time, headers, decoded payload
    POST   /dead/{seq}/retry     -> Retried | 404 | 409 (its subject is not one a worker reads)
    POST   /dead/retry           -> Retried: every letter that can go back, oldest first
    DELETE /dead/{seq}           -> 204 | 404
A retry publishes the payload again on the subject it came from with a fresh Nats-Msg-Id,
`dead/<seq>` (the original's id would be dropped inside the duplicate window; a retry repeated inside
it is), then removes the letter. If the publish fails, nothing is removed; if the removal fails after
it, the letter stays and a second retry publishes nothing new inside the window. Letters expire
after the DEAD stream's max_age (30 days). NATS trouble is a 503 with a short reason; details go to
the log.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ValidationError

from mailflow.contracts import subjects
from mailflow.contracts.messages import DeadLetter
from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.contracts.streams import consumer_configs
from mailflow.web import require_token

log = logging.getLogger(__name__)

STREAM = "DEAD"
# A letter goes back only to a subject a durable consumer reads: never anywhere its content names.
RETRYABLE = frozenset(cfg.filter_subject for _, cfg in consumer_configs())


class DeadSummary(BaseModel):
    seq: int
    at: datetime | None = None
    service: str
    subject: str
    reason: str
    size: int  # bytes of the original payload
    queue_ids: list[str] = []  # of the messages it carried, when the payload says


class DeadView(DeadSummary):
    headers: dict[str, str] = {}
    delivered: int = 0
    payload: Any = None  # the original payload, decoded from JSON
    payload_text: str | None = None  # the original payload as text, when it is not JSON


class DeadPage(BaseModel):
    items: list[DeadSummary]
    total: int  # letters in DEAD
    next: int | None = None  # `after` for the next page; None: this was the last


class Retried(BaseModel):
    count: int  # letters published again and removed
    seqs: list[int] = []


def decoded(data: bytes) -> tuple[Any, str | None]:
    """(the JSON value, None), or (None, the bytes as text) when they are not JSON."""
    try:
        return json.loads(data), None
    except ValueError:
        return None, data.decode("utf-8", "replace")


def queue_ids(payload: Any) -> list[str]:
    """The queue ids of a batch's items ({"messages"|"jobs"|"results": [{"queue_id": ...}, ...]})."""
    out: list[str] = []
    if isinstance(payload, dict):
        for items in payload.values():
            if isinstance(items, list):
                out += [i["queue_id"] for i in items if isinstance(i, dict) and isinstance(i.get("queue_id"), str)]
    return list(dict.fromkeys(out))


async def read(js: JetStreamContext, seq: int, after: bool = False) -> tuple[int, DeadLetter] | None:
    """The letter at `seq` (with `after`: the first one after it); None if there is none."""
    try:
        raw = await js.get_msg(STREAM, seq + 1, subjects.MAIL_DEAD, next=True) if after else await js.get_msg(STREAM, seq)
    except NotFoundError:
        return None
    try:
        return raw.seq, DeadLetter.from_bytes(raw.data or b"")
    except ValidationError:  # not written by a worker: shown, never retried
        return raw.seq, DeadLetter(subject="", service="?", reason="not a dead letter", payload=raw.data or b"")


def summary(seq: int, letter: DeadLetter) -> DeadSummary:
    value, _ = decoded(letter.payload)
    return DeadSummary(
        seq=seq,
        at=letter.at,
        service=letter.service,
        subject=letter.subject,
        reason=letter.reason,
        size=len(letter.payload),
        queue_ids=queue_ids(value),
    )


def view(seq: int, letter: DeadLetter) -> DeadView:
    value, text = decoded(letter.payload)
    return DeadView(
        **summary(seq, letter).model_dump(),
        headers=letter.headers,
        delivered=letter.delivered,
        payload=value,
        payload_text=text,
    )


async def page(js: JetStreamContext, after: int, limit: int) -> DeadPage:
    # The count first: a letter that lands while the page is read shows in the items, never in a total
    # whose items are missing.
    total = (await js.stream_info(STREAM)).state.messages
    items: list[DeadSummary] = []
    while len(items) < limit and (found := await read(js, after, after=True)) is not None:
        after = found[0]
        items.append(summary(*found))
    return DeadPage(items=items, total=total, next=after if len(items) == limit else None)


async def retry(js: JetStreamContext, seq: int, letter: DeadLetter, timeout: float = 10.0) -> None:
    """Publish the payload again where it came from, then remove the letter. Raises ValueError if its
    subject is not one a worker reads."""
    if letter.subject not in RETRYABLE:
        raise ValueError(f"letter {seq} came from {letter.subject or 'nowhere known'}, which no worker reads")
    headers = {k: v for k, v in letter.headers.items() if not k.lower().startswith("nats-")}
    headers["Nats-Msg-Id"] = f"dead/{seq}"
    await js.publish(letter.subject, letter.payload, timeout=timeout, headers=headers)
    await js.delete_msg(STREAM, seq)
    log.info("dead letter %d published again on %s", seq, letter.subject, extra={"seq": seq, "reason": letter.reason})


def router(js: JetStreamContext, admin_token: str) -> APIRouter:
    r = APIRouter(dependencies=[Depends(require_token(ADMIN_TOKEN_HEADER, admin_token))], tags=["dead"])

    async def nats(call, *args):
        try:
            return await call(*args)
        except (ValueError, HTTPException):
            raise
        except Exception as exc:
            log.exception("DEAD stream call failed")
            raise HTTPException(503, "the DEAD stream did not answer") from exc

    async def found(seq: int) -> DeadLetter:
        got = await nats(read, js, seq)
        if got is None:
            raise HTTPException(404, f"no dead letter {seq}")
        return got[1]

    @r.get("/dead")
    async def list_dead(after: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=500)) -> DeadPage:
        return await nats(page, js, after, limit)

    @r.post("/dead/retry")
    async def retry_all() -> Retried:
        done: list[int] = []
        after = 0
        while (got := await nats(read, js, after, True)) is not None:
            after, letter = got
            if letter.subject in RETRYABLE:
                await nats(retry, js, after, letter)
                done.append(after)
        return Retried(count=len(done), seqs=done)

    @r.get("/dead/{seq}")
    async def show(seq: int) -> DeadView:
        return view(seq, await found(seq))

    @r.post("/dead/{seq}/retry")
    async def retry_one(seq: int) -> Retried:
        letter = await found(seq)
        try:
            await nats(retry, js, seq, letter)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        return Retried(count=1, seqs=[seq])

    @r.delete("/dead/{seq}", status_code=204)
    async def delete(seq: int) -> Response:
        await found(seq)
        await nats(js.delete_msg, STREAM, seq)
        log.info("dead letter %d deleted by operator", seq, extra={"seq": seq})
        return Response(status_code=204)

    return r
