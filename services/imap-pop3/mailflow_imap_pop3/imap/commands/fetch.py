"""FETCH and UID FETCH: every RFC 3501 §6.4.5 data item, BODY.PEEK, partials, MODSEQ and CHANGEDSINCE.

Messages go in batches (`fetch_batch`): one store round trip per batch for each kind of data the items
need (metadata, parsed structure, raw bodies), fetched concurrently, and the next batch is requested
while this one is written. Items that only need the view (UID, FLAGS, MODSEQ) cost no round trip.
A non-PEEK body fetch sets \\Seen (not in a read-only mailbox) and reports the new FLAGS.
Messages that vanished from the store meanwhile are left out and the command ends NO [EXPUNGEISSUED]
(RFC 2180 §4.1.2). No EXPUNGE is ever sent during FETCH.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mailflow import mime
from mailflow.store.api import SEEN

from mailflow_imap_pop3 import metrics
from mailflow_imap_pop3.imap import errors
from mailflow_imap_pop3.imap import responses as rsp
from mailflow_imap_pop3.imap.responses import Reply
from mailflow_imap_pop3.imap.syntax import Command, Fetch, FetchAtt, Section
from mailflow_imap_pop3.listener import FLUSH_AT

if TYPE_CHECKING:
    from mailflow_imap_pop3.imap.session import Session

_META = {"INTERNALDATE", "RFC822.SIZE"}
_PARSED = {"ENVELOPE", "BODY", "BODYSTRUCTURE"}
_RAW_NAMES = {"RFC822": (b"RFC822", Section()), "RFC822.HEADER": (b"RFC822.HEADER", Section((), "HEADER")),
              "RFC822.TEXT": (b"RFC822.TEXT", Section((), "TEXT"))}  # fmt: skip
_SETS_SEEN = {"RFC822", "RFC822.TEXT"}
_END = b")\r\n"  # the end of one message's FETCH response
_BODIES = metrics.MESSAGES.labels("imap")
_BODY_BYTES = metrics.BYTES.labels("imap")


class Plan:
    """What a FETCH needs from the store, worked out once per command."""

    def __init__(self, atts: tuple[FetchAtt, ...], readonly: bool):
        self.atts = atts
        self.meta = any(a.name in _META for a in atts)
        self.parsed = any(
            a.name in _PARSED
            or (a.section is not None and (a.section.part or a.section.text))
            or a.name in ("RFC822.HEADER", "RFC822.TEXT")
            for a in atts
        )
        self.raw = any(a.section is not None or a.name in _RAW_NAMES for a in atts)
        self.sets_seen = not readonly and any(
            (a.section is not None and not a.peek) or a.name in _SETS_SEEN for a in atts
        )
        self.flags = any(a.name == "FLAGS" for a in atts)


async def _load(s: Session, plan: Plan, uids: list[int]):
    p, mid = s.principal, s.view.mailbox_id
    calls = []
    if plan.meta:
        calls.append(s.store.fetch_meta(p, mid, uids))
    if plan.parsed:
        calls.append(s.store.fetch_parsed(p, mid, uids))
    if plan.raw:
        calls.append(s.store.fetch_bodies(p, mid, uids))
    results = list(await asyncio.gather(*calls)) if len(calls) > 1 else [await calls[0]] if calls else []
    metas = {m.uid: m for m in results.pop(0)} if plan.meta else None
    parsed = results.pop(0) if plan.parsed else None
    raws = results.pop(0) if plan.raw else None
    return metas, parsed, raws


def _section_bytes(raw: bytes, parsed: mime.ParsedMessage | None, section: Section) -> bytes:
    if not section.part and not section.text:
        return raw
    return mime.section(raw, parsed, section.spec())


def _body_item(att: FetchAtt, raw: bytes, parsed: mime.ParsedMessage | None) -> tuple[bytes, bytes]:
    """(label and literal length, data) of a body item, kept apart so the data is never copied here."""
    if att.name in _RAW_NAMES:
        label, section = _RAW_NAMES[att.name]
        data = _section_bytes(raw, parsed, section)
        return label + b" {%d}\r\n" % len(data), data
    data = _section_bytes(raw, parsed, att.section)
    label = b"BODY[" + att.section.spec().encode() + b"]"
    if att.partial is not None:
        offset, count = att.partial
        data = data[offset : offset + count]
        label += b"<%d>" % offset
    return label + b" {%d}\r\n" % len(data), data


async def _fetch(s: Session, cmd: Command, uid: bool) -> Reply | None:
    args: Fetch = cmd.args
    view = s.view
    atts = args.atts
    if uid and not any(a.name == "UID" for a in atts):
        atts = (FetchAtt("UID"), *atts)
    if args.changed_since is not None or any(a.name == "MODSEQ" for a in atts):
        s.condstore = True
    if args.changed_since is not None and not any(a.name == "MODSEQ" for a in atts):
        atts = (*atts, FetchAtt("MODSEQ"))
    indexes = s.targets(args.seqset, uid)
    if args.changed_since is not None:
        indexes = [i for i in indexes if view.modseqs[i] > args.changed_since]
    plan = Plan(atts, view.readonly)
    batch = max(1, s.ctx.settings.fetch_batch)
    missing = False
    chunks = [indexes[k : k + batch] for k in range(0, len(indexes), batch)]
    needs_store = plan.meta or plan.parsed or plan.raw
    pending: asyncio.Future | None = None
    try:
        for n, chunk in enumerate(chunks):
            loaded = (None, None, None)
            if needs_store:
                loaded = await (
                    pending if pending is not None else _load(s, plan, [view.uids[i] for i in chunk])
                )
                pending = None
                if n + 1 < len(chunks):  # ask for the next batch while this one is written
                    pending = asyncio.ensure_future(_load(s, plan, [view.uids[i] for i in chunks[n + 1]]))
            missing |= await _write_batch(s, plan, chunk, loaded)
            if s.conn.pending >= FLUSH_AT:
                await s.conn.flush()
    finally:
        if pending is not None:
            pending.cancel()
    if missing:
        return errors.R_EXPUNGED
    return None


async def _write_batch(s: Session, plan: Plan, chunk: list[int], loaded) -> bool:
    view = s.view
    metas, parsed_json, raws = loaded
    missing = False
    seen_now: set[int] = set()
    if plan.sets_seen:
        unseen = [view.uids[i] for i in chunk if SEEN not in view.flags[i]]
        if raws is not None:
            unseen = [u for u in unseen if u in raws]
        if unseen:
            res = await s.store.store_flags(s.principal, view.mailbox_id, unseen, "add", frozenset({SEEN}))
            view.update_flags(res.updated)
            seen_now = {m.uid for m in res.updated}
    out: list[bytes] = []
    size = nbodies = nbytes = 0
    for i in chunk:
        u = view.uids[i]
        raw = parsed = meta = None
        if raws is not None:
            raw = raws.get(u)
            if raw is None:
                missing = True
                continue
        if metas is not None:
            meta = metas.get(u)
            if meta is None:
                missing = True
                continue
        if parsed_json is not None:
            pj = parsed_json.get(u)
            if pj is None:
                missing = True
                continue
            parsed = mime.from_json(pj)
        small: list[bytes] = []  # items up to the next literal, joined by spaces
        lead = b"* %d FETCH (" % (i + 1)  # what the next run of items starts with
        flags_done = False
        for att in plan.atts:
            name = att.name
            if name == "UID":
                small.append(b"UID %d" % u)
            elif name == "FLAGS":
                small.append(b"FLAGS " + rsp.flags(view.flags_of(i)))
                flags_done = True
            elif name == "MODSEQ":
                small.append(b"MODSEQ (%d)" % view.modseqs[i])
            elif name == "INTERNALDATE":
                small.append(b"INTERNALDATE " + rsp.internaldate(meta.internal_date))
            elif name == "RFC822.SIZE":
                small.append(b"RFC822.SIZE %d" % meta.size)
            elif name == "ENVELOPE":
                small.append(b"ENVELOPE " + rsp.envelope(parsed.envelope))
            elif name == "BODYSTRUCTURE":
                small.append(b"BODYSTRUCTURE " + rsp.body_structure(parsed.body, True))
            elif name == "BODY":
                small.append(b"BODY " + rsp.body_structure(parsed.body, False))
            else:
                head, data = _body_item(att, raw, parsed)
                small.append(head)
                # the literal's data ends this run of items; the next item starts after a space
                piece = lead + b" ".join(small)
                lead = b" "
                out += (piece, data)
                size += len(piece) + len(data)
                small = []
                nbodies += 1
                nbytes += len(data)
        if u in seen_now and not flags_done:
            small.append(b"FLAGS " + rsp.flags(view.flags_of(i)))
        if small:
            piece = lead + b" ".join(small)
            out.append(piece)
            size += len(piece)
        out.append(_END)
        size += 3
    s.conn.write_many(out, size)
    if nbodies:
        _BODIES.inc(nbodies)
        _BODY_BYTES.inc(nbytes)
    return missing


async def cmd_fetch(s: Session, cmd: Command) -> Reply | None:
    return await _fetch(s, cmd, uid=False)


async def cmd_uid_fetch(s: Session, cmd: Command) -> Reply | None:
    return await _fetch(s, cmd, uid=True)
