"""Access group for imap-pop3: header X-Mailflow-Token and `Authorization: Bearer <session token>`.

Every call is POST with a small JSON body (mailbox names carry "/", so they are never in the path);
UID lists travel as ranges [[low, high], ...]. Answers are JSON, except three frames
(mailflow.store.wire) that carry bytes or bulk numbers:
  /access/select  header {status, recent_from, flagsets, permanent_keywords, and with vanished_since
                  (QRESYNC) vanished (UID ranges expunged after it) and vanished_complete}, parts: uids
                  (uint32), flag-set index per message (uint16), modseqs (int64)
  /access/parsed  header {uids}, one part per message: its mailflow.mime JSON
  /access/bodies  header {uids}, one part per message: the raw bytes (streamed as they are read)
/access/append takes a frame: header {name, items: [{flags, internal_date}, ...]}, one part per item: the
message (APPEND is one item, MULTIAPPEND several: all stored or none).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from mailflow.contracts.rest import SERVICE_TOKEN_HEADER
from mailflow.errors import Invalid
from mailflow.store import search as search_keys
from mailflow.store import wire
from mailflow.store.api import MailboxStatus
from mailflow.web import require_token
from mailflow_mailbox_store.blobs import READ_BATCH_BYTES, in_batches
from mailflow_mailbox_store.sessions import Session
from mailflow_mailbox_store.uidset import UidSet

FRAME_IN = {
    "requestBody": {"content": {wire.CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}}
}
FRAME_OUT = {"200": {"content": {wire.CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}}}

Ranges = list[tuple[int, int]]


class Name(BaseModel):
    name: str = Field(max_length=4096)


class Create(Name):
    special_use: str | None = None


class Rename(BaseModel):
    old: str = Field(max_length=4096)
    new: str = Field(max_length=4096)


class Subscribe(Name):
    subscribed: bool = True


class Select(Name):
    claim_recent: bool = True
    vanished_since: int | None = Field(None, ge=0, le=2**63 - 1)  # QRESYNC: UIDs expunged after it too


class Recent(BaseModel):
    mailbox_id: int
    upto: int = Field(ge=1)
    claim: bool = True


class Since(BaseModel):
    mailbox_id: int
    since: int = 0


class Uids(BaseModel):
    mailbox_id: int
    uids: Ranges


class Section(Uids):
    spec: str = Field("", max_length=4096)  # "", "HEADER", "1.2.MIME", "HEADER.FIELDS (FROM TO)"...


class Flags(Uids):
    op: str
    flags: list[str] = Field(max_length=1000)
    unchanged_since: int | None = None


class Expunge(BaseModel):
    mailbox_id: int
    uids: Ranges | None = None


class Copy(Uids):
    dest: str = Field(max_length=4096)


class Search(BaseModel):
    mailbox_id: int
    key: dict


class Sort(Search):
    criteria: list[tuple[str, bool]] = Field(min_length=1, max_length=32)  # (name, reverse)


class Thread(Search):
    algorithm: str = Field(max_length=32)


class Unlock(BaseModel):
    token: str = Field(max_length=128)


def _json(data) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


def status_obj(st: MailboxStatus) -> dict:
    return {
        "id": st.id, "name": st.name, "uidvalidity": st.uidvalidity, "uidnext": st.uidnext, "messages": st.messages,
        "unseen": st.unseen, "recent": st.recent, "highestmodseq": st.highestmodseq, "size": st.size,
    }  # fmt: skip


def session_of(store) -> Callable[[Request], Awaitable[Session]]:
    """The caller's session from `Authorization: Bearer <token>` (this group's and api/sieve.py's);
    401 "session" for a forged, expired or revoked token."""

    async def session(request: Request) -> Session:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        s = await store.session(token.strip()) if scheme.lower() == "bearer" else None
        if s is None:
            raise HTTPException(status_code=401, detail="session")
        return s

    return session


def router(store, service_token: str, max_items: int = 1000) -> APIRouter:
    r = APIRouter(
        prefix="/access",
        tags=["access"],
        dependencies=[Depends(require_token(SERVICE_TOKEN_HEADER, service_token))],
    )
    session = session_of(store)

    def uidset(ranges: Ranges) -> UidSet:
        return UidSet(ranges)

    @r.post("/mailboxes/list")
    async def list_mailboxes(request: Request):
        """[[id, name, special_use, subscribed, has_children, selectable], ...] with INBOX first."""
        boxes = await store.list_mailboxes(await session(request))
        return _json(
            [[b.id, b.name, b.special_use, b.subscribed, b.has_children, b.selectable] for b in boxes]
        )

    @r.post("/mailboxes/create")
    async def create_mailbox(request: Request, body: Create):
        b = await store.create_mailbox(await session(request), body.name, body.special_use)
        return _json([b.id, b.name, b.special_use, b.subscribed, b.has_children, b.selectable])

    @r.post("/mailboxes/delete")
    async def delete_mailbox(request: Request, body: Name):
        await store.delete_mailbox(await session(request), body.name)
        return _json({})

    @r.post("/mailboxes/rename")
    async def rename_mailbox(request: Request, body: Rename):
        await store.rename_mailbox(await session(request), body.old, body.new)
        return _json({})

    @r.post("/mailboxes/subscriptions")
    async def subscriptions(request: Request):
        """[name, ...]: every subscribed name, existing or not."""
        return _json(await store.subscriptions(await session(request)))

    @r.post("/mailboxes/subscribe")
    async def subscribe(request: Request, body: Subscribe):
        await store.subscribe(await session(request), body.name, body.subscribed)
        return _json({})

    @r.post("/quota")
    async def quota(request: Request):
        """The user's storage against their quota: {used_bytes, messages, limit_bytes (null: none)}."""
        q = await store.quota(await session(request))
        return _json({"used_bytes": q.used_bytes, "messages": q.messages, "limit_bytes": q.limit_bytes})

    @r.post("/deleted")
    async def deleted(request: Request, body: Name):
        """The mailbox's messages flagged \\Deleted: {messages, size}."""
        d = await store.deleted(await session(request), body.name)
        return _json({"messages": d.messages, "size": d.size})

    @r.post("/status")
    async def status(request: Request, body: Name):
        return _json(status_obj(await store.status(await session(request), body.name)))

    @r.post("/select", responses=FRAME_OUT)
    async def select(request: Request, body: Select):
        """The mailbox's status and every message's UID, flags and MODSEQ (see the module docstring)."""
        sel = await store.select(await session(request), body.name, body.claim_recent, body.vanished_since)
        lst = sel.listing
        head = {
            "status": status_obj(sel.status),
            "recent_from": sel.recent_from,
            "flagsets": lst.flagsets,
            "index": lst.index.typecode,
            "permanent_keywords": sel.permanent_keywords,
        }
        if sel.vanished is not None:
            head["vanished"] = wire.uid_ranges(sel.vanished[0])
            head["vanished_complete"] = sel.vanished[1]
        parts = [wire.pack_array(lst.uids), wire.pack_array(lst.index), wire.pack_array(lst.modseqs)]
        return Response(wire.encode(head, parts), media_type=wire.CONTENT_TYPE)

    @r.post("/recent")
    async def recent(request: Request, body: Recent):
        """{recent_from}: new messages from this UID up to `upto` are \\Recent to the caller (Store.claim_recent)."""
        mark = await store.claim_recent(await session(request), body.mailbox_id, body.upto, body.claim)
        return _json({"recent_from": mark})

    @r.post("/changes")
    async def changes(request: Request, body: Since):
        c = await store.changes(await session(request), body.mailbox_id, body.since)
        return _json(
            {
                "status": status_obj(c.status),
                "updated": c.updated.to_obj(),
                "expunged": c.expunged,
                "complete": c.complete,
            }
        )

    @r.post("/meta")
    async def fetch_meta(request: Request, body: Uids):
        metas = await store.fetch_meta(await session(request), body.mailbox_id, uidset(body.uids))
        return _json(metas.to_obj())

    @r.post("/savedates")
    async def fetch_save_dates(request: Request, body: Uids):
        """{"u": [uid, ...], "s": [saved_at or null, ...]} (RFC 8514 save dates, Unix seconds)."""
        rows = await store.fetch_save_dates(await session(request), body.mailbox_id, uidset(body.uids))
        return _json({"u": [u for u, _ in rows], "s": [s for _, s in rows]})

    @r.post("/parsed", responses=FRAME_OUT)
    async def fetch_parsed(request: Request, body: Uids):
        rows = await store.fetch_parsed(await session(request), body.mailbox_id, uidset(body.uids))
        return Response(
            wire.encode({"uids": [u for u, _ in rows]}, [p for _, p in rows]), media_type=wire.CONTENT_TYPE
        )

    @r.post("/bodies", responses=FRAME_OUT)
    async def fetch_bodies(request: Request, body: Uids):
        """Raw messages, streamed: read from the blob store a few MiB at a time while being sent."""
        rows, data = await store.bodies(await session(request), body.mailbox_id, uidset(body.uids), READ_BATCH_BYTES)
        if len(rows) > max_items:
            raise Invalid(f"at most {max_items} bodies per call")
        head = {"uids": [u for u, _, _ in rows]}
        sizes = [z for _, _, z in rows]
        if data is not None:
            return Response(wire.encode(head, data), media_type=wire.CONTENT_TYPE)

        async def chunks() -> Iterator[bytes]:
            yield wire.header(head, sizes)
            for batch in in_batches(rows, lambda r: r[2]):
                for part in await store.read_bodies([loc for _, loc, _ in batch]):
                    yield part

        return StreamingResponse(chunks(), media_type=wire.CONTENT_TYPE)

    @r.post("/sections", responses=FRAME_OUT)
    async def fetch_sections(request: Request, body: Section):
        """BODY[<spec>] of many messages, cut in the store: header {uids}, one part per message."""
        rows = await store.fetch_sections(await session(request), body.mailbox_id, uidset(body.uids), body.spec)
        if len(rows) > max_items:
            raise Invalid(f"at most {max_items} messages per call")
        return Response(
            wire.encode({"uids": [u for u, _ in rows]}, [p for _, p in rows]), media_type=wire.CONTENT_TYPE
        )

    @r.post("/flags")
    async def store_flags(request: Request, body: Flags):
        updated, modified = await store.store_flags(
            await session(request), body.mailbox_id, uidset(body.uids), body.op, body.flags, body.unchanged_since
        )
        return _json({"updated": updated.to_obj(), "modified": modified})

    @r.post("/expunge")
    async def expunge(request: Request, body: Expunge):
        uids = None if body.uids is None else uidset(body.uids)
        return _json({"uids": await store.expunge(await session(request), body.mailbox_id, uids)})

    async def _copy(request: Request, body: Copy, move: bool) -> Response:
        res = await store.copy(await session(request), body.mailbox_id, uidset(body.uids), body.dest, move)
        return _json(
            {"uidvalidity": res.uidvalidity, "source_uids": res.source_uids, "dest_uids": res.dest_uids}
        )

    @r.post("/copy")
    async def copy(request: Request, body: Copy):
        return await _copy(request, body, move=False)

    @r.post("/move")
    async def move(request: Request, body: Copy):
        return await _copy(request, body, move=True)

    @r.post("/append", openapi_extra=FRAME_IN)
    async def append(request: Request):
        s = await session(request)
        try:
            head, parts = wire.decode(await request.body())
            name, heads = str(head["name"]), head["items"]
            if not isinstance(heads, list) or len(heads) != len(parts) or not 1 <= len(parts) <= max_items:
                raise ValueError(f"{len(parts)} messages for {len(heads)} items (1 to {max_items})")
            items = [
                (
                    raw,
                    [str(f) for f in h.get("flags") or []],
                    datetime.fromisoformat(h["internal_date"]) if h.get("internal_date") else None,
                )
                for h, raw in zip(heads, parts, strict=True)
            ]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise Invalid(f"bad append frame: {exc}") from exc
        res = await store.append(s, name, items)
        return _json({"uidvalidity": res.uidvalidity, "uids": res.uids})

    @r.post("/search")
    async def search(request: Request, body: Search):
        try:
            key = search_keys.from_obj(body.key)
        except ValueError as exc:
            raise Invalid(str(exc)) from exc
        return _json({"uids": await store.search(await session(request), body.mailbox_id, key)})

    @r.post("/pop3/lock")
    async def pop3_lock(request: Request):
        return _json({"token": await store.pop3_lock(await session(request))})

    @r.post("/pop3/unlock")
    async def pop3_unlock(request: Request, body: Unlock):
        await store.pop3_unlock(await session(request), body.token)
        return _json({})

    @r.post("/sort")
    async def sort(request: Request, body: Sort):
        try:
            key = search_keys.from_obj(body.key)
        except ValueError as exc:
            raise Invalid(str(exc)) from exc
        return _json({"uids": await store.sort(await session(request), body.mailbox_id, key, body.criteria)})

    @r.post("/thread")
    async def thread(request: Request, body: Thread):
        try:
            key = search_keys.from_obj(body.key)
        except ValueError as exc:
            raise Invalid(str(exc)) from exc
        nodes = await store.thread(await session(request), body.mailbox_id, key, body.algorithm)
        return _json({"nodes": nodes})

    return r
