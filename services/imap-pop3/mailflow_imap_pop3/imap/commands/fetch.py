"""FETCH and UID FETCH: every RFC 3501 §6.4.5 data item, BODY.PEEK, partials, MODSEQ, CHANGEDSINCE and VANISHED.

Messages go in batches (`fetch_batch`): one store round trip per batch for each kind of data the items
need (metadata, parsed structure, whole messages, each distinct section: the store cuts sections, so
headers and parts travel without their bodies), fetched concurrently, and the next batch is requested
while this one is written. Items that only need the view (UID, FLAGS, MODSEQ) cost no round trip.
SAVEDATE (RFC 8514) is one more call per batch, only when asked: NIL for a message the store has no
save date for (stored before it kept them). A non-PEEK body fetch sets \\Seen (not in a read-only
mailbox) and reports the new FLAGS.
BINARY[part] and BINARY.SIZE[part] (RFC 3516) are the part's bytes without their Content-Transfer-Encoding
(mailflow.mime.decode_transfer), sent as a literal8 (~{n}) when they hold a NUL; a part in an encoding we
cannot undo, or base64 that does not decode, ends the command NO [UNKNOWN-CTE] (nothing is guessed).
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
from mailflow_imap_pop3.imap.qresync import vanished
from mailflow_imap_pop3.imap.responses import Reply
from mailflow_imap_pop3.imap.syntax import Command, Fetch, FetchAtt, Section
from mailflow_imap_pop3.listener import FLUSH_AT

if TYPE_CHECKING:
    from mailflow_imap_pop3.imap.session import Session

_META = {"INTERNALDATE", "RFC822.SIZE", "EMAILID"}
_PARSED = {"ENVELOPE", "BODY", "BODYSTRUCTURE"}
_BINARY = {"BINARY[]", "BINARY.SIZE"}
_RAW_NAMES = {"RFC822": (b"RFC822", Section()), "RFC822.HEADER": (b"RFC822.HEADER", Section((), "HEADER")),
              "RFC822.TEXT": (b"RFC822.TEXT", Section((), "TEXT"))}  # fmt: skip
_SETS_SEEN = {"RFC822", "RFC822.TEXT"}
_END = b")\r\n"  # the end of one message's FETCH response
_BODIES = metrics.MESSAGES.labels("imap")
_BODY_BYTES = metrics.BYTES.labels("imap")


def _section_of(att: FetchAtt) -> Section | None:
    return _RAW_NAMES[att.name][1] if att.name in _RAW_NAMES else att.section


class Plan:
    """What a FETCH needs from the store, worked out once per command: whole messages for BODY[] and
    RFC822, one fetch_sections call per other distinct section."""

    def __init__(self, atts: tuple[FetchAtt, ...], readonly: bool):
        self.atts = atts
        sections = [sec for a in atts if (sec := _section_of(a)) is not None]
        self.specs = tuple(dict.fromkeys(sec.spec() for sec in sections if sec.part or sec.text))
        self.meta = any(a.name in _META for a in atts)
        self.saved = any(a.name == "SAVEDATE" for a in atts)
        self.parsed = any(a.name in _PARSED or (a.name in _BINARY and a.section.part) for a in atts)
        self.raw = any(not sec.part and not sec.text for sec in sections)
        self.sets_seen = not readonly and any(
            (a.section is not None and not a.peek) or a.name in _SETS_SEEN for a in atts
        )
        self.store_calls = self.meta or self.saved or self.parsed or self.raw or bool(self.specs)


class Loaded:
    __slots__ = ("metas", "saved", "parsed", "raws", "sections")

    def __init__(self, metas=None, parsed=None, raws=None, sections=None):
        self.saved: dict | None = None  # uid -> save date (None: not known)
        self.metas: dict | None = metas  # uid -> MessageMeta
        self.parsed: dict | None = parsed  # uid -> mime JSON
        self.raws: dict | None = raws  # uid -> whole message
        self.sections: dict | None = sections  # spec -> uid -> section bytes


def body_sections(store, p, mailbox_id: int, uids: list[int], spec: str):
    """The store call for BODY[spec] of these messages (uid -> bytes, expunged ones absent): the whole
    message for "", else the store's cut (FETCH here, CATENATE's URLs in catenate.py)."""
    if spec:
        return store.fetch_sections(p, mailbox_id, uids, spec)
    return store.fetch_bodies(p, mailbox_id, uids)


async def _load(s: Session, plan: Plan, uids: list[int]) -> Loaded:
    p, mid, store = s.principal, s.view.mailbox_id, s.store
    calls = []
    if plan.meta:
        calls.append(store.fetch_meta(p, mid, uids))
    if plan.saved:
        calls.append(store.fetch_save_dates(p, mid, uids))
    if plan.parsed:
        calls.append(store.fetch_parsed(p, mid, uids))
    if plan.raw:
        calls.append(body_sections(store, p, mid, uids, ""))
    for spec in plan.specs:
        calls.append(body_sections(store, p, mid, uids, spec))
    results = list(await asyncio.gather(*calls)) if len(calls) > 1 else [await calls[0]]
    out = Loaded()
    if plan.meta:
        out.metas = {m.uid: m for m in results.pop(0)}
    if plan.saved:
        out.saved = results.pop(0)
    if plan.parsed:
        out.parsed = results.pop(0)
    if plan.raw:
        out.raws = results.pop(0)
    if plan.specs:
        out.sections = dict(zip(plan.specs, results, strict=True))
    return out


def _body_item(att: FetchAtt, u: int, raw: bytes | None, loaded: Loaded) -> tuple[bytes, bytes]:
    """(label and literal length, data) of a body item, kept apart so the data is never copied here."""
    section = _section_of(att)
    data = loaded.sections[section.spec()][u] if section.part or section.text else raw
    if att.name in _RAW_NAMES:
        return _RAW_NAMES[att.name][0] + b" {%d}\r\n" % len(data), data
    label = b"BODY[" + section.spec().encode() + b"]"
    if att.partial is not None:
        offset, count = att.partial
        data = data[offset : offset + count]
        label += b"<%d>" % offset
    return label + b" {%d}\r\n" % len(data), data


def _binary(att: FetchAtt, u: int, raw: bytes | None, loaded: Loaded, parsed: mime.ParsedMessage | None) -> bytes:
    """The decoded content of BINARY[part] (the whole message, as it is, for BINARY[])."""
    part = att.section.part
    if not part:
        return raw
    data = loaded.sections[att.section.spec()][u]
    node = mime.part_at(parsed.body, part)
    if node is None or node.parts or node.type == "MULTIPART":
        return data  # no such part (empty), or a container: nothing to decode
    try:
        return mime.decode_transfer(data, node.encoding, strict=True)
    except ValueError:
        raise errors.no(f"Cannot decode part {att.section.spec()} ({node.encoding[:40]})", "UNKNOWN-CTE") from None


def _binary_item(att: FetchAtt, data: bytes) -> tuple[bytes, bytes]:
    label = b"BINARY[" + att.section.spec().encode() + b"]"
    if att.partial is not None:
        offset, count = att.partial
        data = data[offset : offset + count]
        label += b"<%d>" % offset
    literal = b" ~{%d}\r\n" if b"\x00" in data else b" {%d}\r\n"  # RFC 3516 §4.2: NUL needs literal8
    return label + literal % len(data), data


async def _fetch(s: Session, cmd: Command, uid: bool) -> Reply | None:
    args: Fetch = cmd.args
    if args.vanished:
        await _vanished(s, args, uid)
    view = s.view
    atts = args.atts
    if uid and not any(a.name == "UID" for a in atts):
        atts = (FetchAtt("UID"), *atts)
    if args.changed_since is not None or any(a.name == "MODSEQ" for a in atts):
        s.condstore = True
    names = {a.name for a in atts}
    if "MODSEQ" not in names and (args.changed_since is not None or (s.condstore and "FLAGS" in names)):
        atts = (*atts, FetchAtt("MODSEQ"))  # RFC 7162 §3.1: FLAGS come with MODSEQ once CONDSTORE is on
    indexes = s.targets(args.seqset, uid)
    if args.changed_since is not None:
        indexes = [i for i in indexes if view.modseqs[i] > args.changed_since]
    if await send(s, atts, indexes):
        return errors.R_EXPUNGED
    return None


async def send(s: Session, atts: tuple[FetchAtt, ...], indexes: list[int]) -> bool:
    """FETCH responses with `atts` for these messages of the view (FETCH, NOTIFY's MessageNew); True
    when some of them vanished from the store meanwhile (left out)."""
    view = s.view
    plan = Plan(atts, view.readonly)
    batch = max(1, s.ctx.settings.fetch_batch)
    missing = False
    chunks = [indexes[k : k + batch] for k in range(0, len(indexes), batch)]
    needs_store = plan.store_calls
    pending: asyncio.Future | None = None
    try:
        for n, chunk in enumerate(chunks):
            loaded = Loaded()
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
    return missing


async def _vanished(s: Session, args: Fetch, uid: bool) -> None:
    """UID FETCH ... (CHANGEDSINCE m VANISHED), RFC 7162 §3.2.6: first `* VANISHED (EARLIER)` with the UIDs
    of the set expunged since m (BAD on FETCH, or without ENABLE QRESYNC). UIDs the view still numbers
    (their removal waits for a command that may tell it) are left for the VANISHED that removes them."""
    if not uid:
        raise errors.bad("VANISHED is a UID FETCH modifier")
    if not s.qresync:
        raise errors.bad("VANISHED without ENABLE QRESYNC")
    view = s.view
    ch = await s.store.changes(s.principal, view.mailbox_id, args.changed_since)
    top = max(view.uidnext, ch.status.uidnext) - 1
    known = [(lo, min(hi, top)) for lo, hi in args.seqset.resolve(top) if lo <= top]
    for line in rsp.vanished(vanished(view.uids, known, ch.expunged, ch.expunged_complete), earlier=True):
        s.write(line)


async def _write_batch(s: Session, plan: Plan, chunk: list[int], loaded: Loaded) -> bool:
    view = s.view
    metas, parsed_json, raws = loaded.metas, loaded.parsed, loaded.raws
    missing = False
    seen_now: set[int] = set()
    if plan.sets_seen:
        unseen = [view.uids[i] for i in chunk if SEEN not in view.flags[i]]
        if raws is not None:
            unseen = [u for u in unseen if u in raws]
        elif loaded.sections is not None:
            first = next(iter(loaded.sections.values()))
            unseen = [u for u in unseen if u in first]
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
        if loaded.saved is not None and u not in loaded.saved:
            missing = True
            continue
        if parsed_json is not None:
            pj = parsed_json.get(u)
            if pj is None:
                missing = True
                continue
            parsed = mime.from_json(pj)
        if loaded.sections is not None and any(u not in cut for cut in loaded.sections.values()):
            missing = True
            continue
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
            elif name == "SAVEDATE":
                at = loaded.saved[u]
                small.append(b"SAVEDATE " + (rsp.NIL if at is None else rsp.internaldate(at)))
            elif name == "RFC822.SIZE":
                small.append(b"RFC822.SIZE %d" % meta.size)
            elif name == "EMAILID":
                small.append(b"EMAILID (" + rsp.email_id(meta.email_id).encode() + b")")
            elif name == "THREADID":
                small.append(b"THREADID NIL")  # RFC 8474 §5.2: no threads are kept
            elif name == "ENVELOPE":
                small.append(b"ENVELOPE " + rsp.envelope(parsed.envelope))
            elif name == "BODYSTRUCTURE":
                small.append(b"BODYSTRUCTURE " + rsp.body_structure(parsed.body, True))
            elif name == "BODY":
                small.append(b"BODY " + rsp.body_structure(parsed.body, False))
            elif name == "BINARY.SIZE":
                data = _binary(att, u, raw, loaded, parsed)
                small.append(b"BINARY.SIZE[" + att.section.spec().encode() + b"] %d" % len(data))
            else:
                if name == "BINARY[]":
                    head, data = _binary_item(att, _binary(att, u, raw, loaded, parsed))
                else:
                    head, data = _body_item(att, u, raw, loaded)
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
