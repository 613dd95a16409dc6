"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 §4): SEARCH, UID SEARCH, SORT and UID SORT with RETURN
(UPDATE) answer as usual (ESEARCH with the command's tag), and then the session keeps the criteria
and, whenever it tells the client what changed (Session.sync), tells it which messages started or
stopped matching: `* ESEARCH (TAG "t") [UID] ADDTO (position set)` / `REMOVEFROM (position set)`;
CANCELUPDATE "t" ends it. A context lives in the view: another SELECT, UNSELECT or CLOSE ends it.

Only the messages that changed are looked at again (the view collects their UIDs in `touched`): new
ones, expunged ones, and those whose flags changed when the criteria name flags (content, size and
dates never change). Flag criteria are the view's own evaluator (search._local_hits's matcher),
anything else one store search limited to the changed UIDs. For SEARCH the position is 0 (the order
is the numbers' own); for SORT each message comes with its position (1 is the first) in the sort
order, REMOVEFROM from the last position to the first and ADDTO from the first to the last, so that
applying them one after the other gives the new order. Positions of new matches need the new order:
one store sort of the criteria, only when something was added to a SORT context.
With MIN, MAX or COUNT the session sends them again (the same ESEARCH as the first answer) when they
change. PARTIAL with UPDATE (RFC 9394 §3.2) is not kept: the first answer is sent with NOUPDATE.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from math import isqrt
from typing import TYPE_CHECKING

from mailflow.store import search as sk
from mailflow_imap_pop3.imap import errors
from mailflow_imap_pop3.imap import responses as rsp
from mailflow_imap_pop3.imap.commands.search import _esearch, _Row, _uid_ranges, immutable, local
from mailflow_imap_pop3.imap.responses import Reply
from mailflow_imap_pop3.imap.syntax import CancelUpdate, Command, Search
from mailflow_imap_pop3.imap.view import MailboxView

if TYPE_CHECKING:
    from mailflow_imap_pop3.imap.session import Session

log = logging.getLogger(__name__)

_SUMMARY = frozenset({"MIN", "MAX", "COUNT"})


@dataclass(slots=True)
class Updating:
    tag: str
    uid: bool
    key: object  # the criteria as resolved when the search ran (sequence numbers and "$" are UIDs)
    criteria: tuple[tuple[str, bool], ...] | None  # SORT's; None for SEARCH
    returns: frozenset[str]
    order: list[int]  # the matching UIDs: ascending for SEARCH, in sort order for SORT
    top: int  # the highest UID looked at (new messages are above it)
    summary: bytes = b""  # the MIN/MAX/COUNT answer last sent
    members: set[int] = field(default_factory=set)


def _noupdate(tag: str, text: str) -> bytes:
    """RFC 5267 §5: NOUPDATE's tag is always quoted (a tag has no quote, backslash or CRLF), however long."""
    return b'* NO [NOUPDATE "' + tag.encode("latin-1") + b'"] ' + text.encode() + rsp.CRLF


def start(s: Session, tag: str, uid: bool, args: Search, key, criteria, order: list[int]) -> None:
    """After the first answer of a search with RETURN (UPDATE): keep it, or say NOUPDATE."""
    view = s.view
    if args.partial is not None:
        s.write(_noupdate(tag, "UPDATE with PARTIAL is not kept"))
        return
    limit = s.ctx.settings.max_search_contexts  # RFC 5267 §4.2: beyond it NOUPDATE
    if tag not in view.contexts and len(view.contexts) >= limit:
        s.write(_noupdate(tag, f"Too many search contexts (the limit is {limit})"))
        return
    uids = [view.uids[i] for i in order]
    ctx = Updating(tag, uid, key, criteria, args.returns, uids, view.uids[-1] if view.uids else 0)
    ctx.members = set(uids)
    if args.returns & _SUMMARY:
        ctx.summary = _summary(view, ctx)
    view.contexts.pop(tag, None)  # a tag used again replaces its context (most recent last)
    view.contexts[tag] = ctx


def _numbers(view: MailboxView, ctx: Updating, uids) -> list[int]:
    if ctx.uid:
        return list(uids)
    return [i + 1 for u in uids if (i := view.index_of(u)) is not None]


def _summary(view: MailboxView, ctx: Updating) -> bytes:
    return _esearch(ctx.tag, ctx.uid, ctx.returns & _SUMMARY, None, _numbers(view, ctx, ctx.order), None)


async def _matching(s: Session, view: MailboxView, key, uids: list[int]) -> set[int]:
    """Which of these UIDs (all in the view, ascending) match `key`: the view's evaluator for flags,
    else one store search bounded to them."""
    if local(key):
        match = sk.matcher(key)
        row = _Row()
        hits = set()
        for u in uids:
            i = view.index_of(u)
            row.uid, row.flags = u, view.flags[i]
            if match(row):
                hits.add(u)
        return hits
    bound = _uid_ranges(view, [view.index_of(u) for u in uids])
    return set(await s.store.search(s.principal, view.mailbox_id, sk.And((key, bound))))


async def _update(s: Session, view: MailboxView, ctx: Updating, touched: list[int]) -> None:
    present = [u for u in touched if view.index_of(u) is not None]
    gone = [u for u in touched if u in ctx.members and view.index_of(u) is None]
    check = [u for u in present if u > ctx.top] if immutable(ctx.key) else present
    ctx.top = max(ctx.top, view.uids[-1] if view.uids else 0)
    hits = await _matching(s, view, ctx.key, check) if check else set()
    added = [u for u in check if u in hits and u not in ctx.members]
    removed = [u for u in check if u not in hits and u in ctx.members]
    if not (added or removed or gone):
        return
    if ctx.criteria is None:
        parts = _search_changes(view, ctx, added, removed, gone)
    else:  # also without ALL: SORT's MIN and MAX are the first and last in its order
        parts = await _sort_changes(s, view, ctx, added, removed, gone)
    if parts and "ALL" in ctx.returns:
        head = b"* ESEARCH (TAG " + rsp.string(ctx.tag) + (b") UID " if ctx.uid else b") ")
        s.write(head + b" ".join(parts) + rsp.CRLF)
    if ctx.returns & _SUMMARY and (line := _summary(view, ctx)) != ctx.summary:
        ctx.summary = line
        s.write(line)


def _search_changes(view: MailboxView, ctx: Updating, added, removed, gone) -> list[bytes]:
    """RFC 5267 §4.3 for SEARCH: position 0. Without UID, an expunged message is told by EXPUNGE."""
    dropped = sorted([*removed, *gone]) if ctx.uid else sorted(removed)
    parts = []
    if dropped:
        parts.append(b"REMOVEFROM (0 %s)" % rsp.uid_set(_numbers(view, ctx, dropped)).encode())
    if added:
        parts.append(b"ADDTO (0 %s)" % rsp.uid_set(_numbers(view, ctx, sorted(added))).encode())
    ctx.members.difference_update(removed)
    ctx.members.difference_update(gone)
    ctx.members.update(added)
    ctx.order = sorted(ctx.members)
    return parts


async def _sort_changes(s: Session, view: MailboxView, ctx: Updating, added, removed, gone) -> list[bytes]:
    """RFC 5267 §4.3 for SORT: each message with its position, removals from the last to the first
    (positions in the order as it was), additions from the first to the last (in the new order)."""
    parts = []
    dropped = {*removed, *gone}
    # the client's list: without UID, the EXPUNGEs sent before took the expunged ones out already
    expunged = set(gone)
    base = ctx.order if ctx.uid else [u for u in ctx.order if u not in expunged]
    told = [(p + 1, u) for p, u in enumerate(base) if u in dropped]
    if told:  # without UID only flag changes remain: those messages are still in the view
        pairs = b" ".join(b"%d %d" % (p, u if ctx.uid else view.index_of(u) + 1) for p, u in reversed(told))
        parts.append(b"REMOVEFROM (" + pairs + b")")
    kept = [u for u in base if u not in dropped]
    if added:
        new = await _placed(s, view, ctx, kept, added)
        fresh = set(added)
        pairs = b" ".join(
            b"%d %d" % (p + 1, u if ctx.uid else view.index_of(u) + 1) for p, u in enumerate(new) if u in fresh
        )
        if pairs:
            parts.append(b"ADDTO (" + pairs + b")")
        ctx.order, ctx.members = new, set(new)
    else:
        ctx.order, ctx.members = kept, set(kept)
    return parts


def _uids(view: MailboxView, uids) -> sk.SearchKey:
    return _uid_ranges(view, sorted(i for u in uids if (i := view.index_of(u)) is not None))


async def _sorted(s: Session, view: MailboxView, ctx: Updating, uids) -> list[int]:
    """These messages (all known to match) in the context's sort order: the store sorts them alone."""
    return await s.store.sort(s.principal, view.mailbox_id, _uids(view, uids), list(ctx.criteria))


async def _placed(s: Session, view: MailboxView, ctx: Updating, kept: list[int], added: list[int]) -> list[int]:
    """The new order: `kept` (in order) with `added` put in their places. A message's place among the
    others does not depend on which others there are (sort keys never change, the UID breaks ties), so
    the store need not sort them all: it sorts the new ones among every step-th of the old ("pivots",
    step = sqrt(len(kept))), which tells between which two pivots each falls, then among the old ones
    of those gaps. Two sorts of O(k·sqrt(n)) messages for k new ones in n, or one of all of them when
    that is no more (many new ones, a small result, or a message the store no longer has)."""
    step = isqrt(len(kept))
    if (len(added) + 2) * step < len(kept):
        pivots = kept[::step]
        first = await _sorted(s, view, ctx, [*pivots, *added])
        gap: dict[int, int] = {}  # new UID -> how many pivots come before it
        seen = 0
        fresh = set(added)
        for u in first:
            if u in fresh:
                gap[u] = seen
            else:
                seen += 1
        if seen == len(pivots) and len(gap) == len(added):
            gaps = {g for g in gap.values() if g}
            inner = [u for g in gaps for u in kept[(g - 1) * step + 1 : g * step]]
            second = await _sorted(s, view, ctx, [*inner, *added])
            if len(second) == len(inner) + len(added):
                before = {}  # new UID -> how many old ones come before it
                counted = {g: 0 for g in gaps}
                old_gap = {u: g for g in gaps for u in kept[(g - 1) * step + 1 : g * step]}
                for u in second:
                    if u in fresh:
                        g = gap[u]
                        before[u] = (g - 1) * step + 1 + counted[g] if g else 0
                    else:
                        counted[old_gap[u]] += 1
                rank = {u: r for r, u in enumerate(second)}
                new = list(kept)
                for u in sorted(added, key=lambda u: (before[u], rank[u]), reverse=True):
                    new.insert(before[u], u)  # the last first: the earlier places stay right
                return new
    found = await _sorted(s, view, ctx, [*kept, *added])
    listed = set(found)
    return found + [u for u in kept if u not in listed]  # the store no longer has it: it stays, last


async def update(s: Session) -> None:
    """Bring the selected mailbox's contexts up to date with what the view was told since last time."""
    view = s.view
    if view is None or not view.touched:
        return
    touched, view.touched = sorted(view.touched), set()
    if not view.contexts:
        return
    for ctx in list(view.contexts.values()):
        try:
            await _update(s, view, ctx, touched)
        except Exception as exc:  # the store failed: this context can no longer be kept right
            log.warning("search context %r dropped: %s", ctx.tag[:40], exc)
            view.contexts.pop(ctx.tag, None)
            s.write(_noupdate(ctx.tag, "Search results are no longer updated"))


async def cmd_cancelupdate(s: Session, cmd: Command) -> Reply | None:
    """RFC 5267 §4.3: end the updates of these searches; a tag with none is NO (the others end)."""
    args: CancelUpdate = cmd.args
    unknown = [t for t in args.tags if s.view.contexts.pop(t, None) is None]
    if unknown:
        raise errors.no(f"No search context for tag {unknown[0][:40]!r}")
    return None
