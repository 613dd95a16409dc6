"""SEARCH and UID SEARCH (RFC 3501 §6.4.4, CHARSET UTF-8 and US-ASCII; MODSEQ from RFC 7162), and
their RETURN (MIN MAX ALL COUNT) forms answered with ESEARCH (RFC 4731), PARTIAL (RFC 9394) and SAVE
with "$" (RFC 5182: the result kept as UIDs in the view, so a new SELECT, UNSELECT or CLOSE empties it
and expunged messages drop out). `answer` is also SORT's reply (commands/sort.py).

Sequence numbers, `*`, RECENT/NEW/OLD are resolved here against the session's view and become UID
ranges, so the store only ever sees UIDs. Criteria the view can answer alone (flags, sets) are
evaluated here without a store round trip, by the store's own evaluator (mailflow.store.search.matcher)
over the flags this client was last told; everything else (headers, text, dates, sizes) is the
store's search. Results are limited to messages the client knows (new mail shows up as EXISTS first).
A message's content, size and dates never change, so criteria about only those are remembered per
selected mailbox with the UIDs they matched: the same search again (a client polling for a header)
asks the store only about messages that arrived since; expunged ones drop out by UID.
An unknown charset is NO [BADCHARSET]; a bad key is BAD (both from the parser).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import replace
from typing import TYPE_CHECKING

from mailflow.store import search as sk
from mailflow_imap_pop3.imap import responses as rsp
from mailflow_imap_pop3.imap.responses import Reply
from mailflow_imap_pop3.imap.syntax import Command, RecentKey, Search, SeqKey, SeqSet, UidKey
from mailflow_imap_pop3.imap.view import MailboxView

if TYPE_CHECKING:
    from mailflow_imap_pop3.imap.session import Session

NOTHING = sk.Not(sk.All())


def _uid_ranges(view: MailboxView, indexes: list[int]) -> sk.SearchKey:
    """UID ranges covering exactly these messages of the view (runs of adjacent indexes are one range)."""
    if not indexes:
        return NOTHING
    ranges = []
    start = prev = indexes[0]
    for i in indexes[1:]:
        if i != prev + 1:
            ranges.append((view.uids[start], view.uids[prev]))
            start = i
        prev = i
    ranges.append((view.uids[start], view.uids[prev]))
    return sk.Uids(tuple(ranges))


def resolve(key, view: MailboxView):
    """Replace the session-only keys by UID sets the store understands."""
    match key:
        case SeqKey(seqset=SeqSet(saved=True)) | UidKey(seqset=SeqSet(saved=True)):
            return _uid_ranges(view, view.by_saved())
        case SeqKey(seqset=seqset):
            n = view.exists
            indexes: list[int] = []
            for lo, hi in seqset.resolve(n):  # ascending and disjoint
                indexes.extend(range(lo - 1, min(hi, n)))
            return _uid_ranges(view, indexes)
        case UidKey(seqset=seqset):
            if not view.uids:
                return NOTHING
            return sk.Uids(tuple(seqset.resolve(view.uids[-1])))
        case RecentKey(present=present):
            recent = sorted(i for i, u in enumerate(view.uids) if u in view.recent)
            k = _uid_ranges(view, recent)
            return k if present else sk.Not(k)
        case sk.And(keys=keys):
            return sk.And(tuple(resolve(k, view) for k in keys))
        case sk.Or(a=a, b=b):
            return sk.Or(resolve(a, view), resolve(b, view))
        case sk.Not(key=inner):
            return sk.Not(resolve(inner, view))
    return key


def _only(key, kinds) -> bool:
    return all(isinstance(k, kinds) for k in sk.leaves(key))


def local(key) -> bool:
    """Can the view answer this without the store?"""
    return sk.flags_only(key)


REMEMBERED = 16  # searches remembered per selected mailbox


def immutable(key) -> bool:
    """Does the answer for a message depend only on what never changes (content, size, dates)?"""
    return _only(key, sk.All | sk.Header | sk.Address | sk.Text | sk.Size | sk.Date)


async def _store_search(s: Session, view: MailboxView, key) -> set[int] | frozenset[int]:
    """UIDs (of messages the view knows) that match `key` in the store."""
    top = view.uids[-1] if view.uids else 0
    if not immutable(key):
        return set(await s.store.search(s.principal, view.mailbox_id, key))
    upto, matched = view.searched.pop(key, (0, frozenset()))
    if top > upto:  # UIDs are never reused: only the messages above `upto` are new to this search
        newer = sk.And((key, sk.Uids(((upto + 1, top),))))
        matched = matched | frozenset(await s.store.search(s.principal, view.mailbox_id, newer))
    if len(view.searched) >= REMEMBERED:
        del view.searched[next(iter(view.searched))]
    view.searched[key] = (max(top, upto), matched)  # most recently used last
    return matched


class _Row:
    """One message of the view as the evaluator reads it (UID and flags: all `local` keys need)."""

    __slots__ = ("uid", "flags")


def _span(key) -> tuple[int, int]:
    """The UIDs a key can match at most: a UID set at its top (alone or in an And) bounds them."""
    low, high = 1, 2**63
    for k in key.keys if isinstance(key, sk.And) else (key,):
        if isinstance(k, sk.Uids):
            low = max(low, min((lo for lo, _ in k.ranges), default=high))
            high = min(high, max((hi for _, hi in k.ranges), default=0))
    return low, high


def _local_hits(key, view: MailboxView) -> list[int]:
    """Indexes of the view's messages that match `key` (flags and UIDs only), in order."""
    low, high = _span(key)
    first, last = bisect_left(view.uids, low), bisect_right(view.uids, high)
    if isinstance(key, sk.All):
        return list(range(first, last))
    match = sk.matcher(key)
    row = _Row()
    uids, flags = view.uids, view.flags
    if any(isinstance(k, sk.Uids) for k in sk.leaves(key)):
        hits = []
        for i in range(first, last):
            row.uid, row.flags = uids[i], flags[i]
            if match(row):
                hits.append(i)
        return hits
    # flags alone decide: the evaluator is asked once per distinct flag set (a mailbox has few)
    verdicts: dict[frozenset[str], bool] = {}
    for f in set(flags[first:last]):
        row.uid, row.flags = 0, f
        verdicts[f] = match(row)
    return [i for i in range(first, last) if verdicts[flags[i]]]


_ALL = frozenset({"ALL"})


async def _search(s: Session, cmd: Command, uid: bool) -> Reply | None:
    args: Search = cmd.args
    view = s.view
    if args.returns is None and s.rev2:  # RFC 9051 §6.4.4: SEARCH without RETURN is RETURN (ALL), as ESEARCH
        args = replace(args, returns=_ALL)
    if args.uses_modseq:
        s.condstore = True
    key = resolve(args.key, view)  # "$" as it was before this search
    if args.returns is not None and "SAVE" in args.returns:
        view.saved = []  # RFC 5182 §2.1: a search that fails leaves $ empty
    if local(key):
        hits = _local_hits(key, view)
    else:
        found = await _store_search(s, view, key)
        hits = sorted(i for u in found if (i := view.index_of(u)) is not None)
    answer(s, cmd.tag, uid, args, hits, b"SEARCH")
    if args.returns is not None and "UPDATE" in args.returns:
        from mailflow_imap_pop3.imap.commands import context  # context builds on this module

        context.start(s, cmd.tag, uid, args, key, None, hits)
    return None


def window(items: list, partial: tuple[int, int]) -> list:
    """RFC 9394 §3.1: the results at positions low..high (1 is the first), or counted from the last
    when negative (-1 is the last)."""
    lo, hi = partial
    if lo > 0:
        return items[lo - 1 : hi]
    n = len(items)
    return items[max(0, n + lo) : max(0, n + hi + 1)]


def _saved(view: MailboxView, args: Search, order: list[int]) -> list[int]:
    """The UIDs RETURN (SAVE) keeps (RFC 5182 §2.4, RFC 9394 §3.3): with MIN and/or MAX and neither
    ALL nor COUNT only those (the first and last found: SORT's first and last), with PARTIAL its
    window, else every match."""
    returns = args.returns or frozenset()
    if args.partial is not None:
        order = window(order, args.partial)
    elif order and returns & {"MIN", "MAX"} and not returns & {"ALL", "COUNT"}:
        chosen = set()
        if "MIN" in returns:
            chosen.add(order[0])
        if "MAX" in returns:
            chosen.add(order[-1])
        order = list(chosen)
    return sorted(view.uids[i] for i in order)


def answer(s: Session, tag: str, uid: bool, args: Search, order: list[int], name: bytes) -> None:
    """SEARCH's and SORT's reply for the view's messages at `order` (indexes, in the order found):
    `* SEARCH ...` / `* SORT ...`, or with RETURN the ESEARCH (RFC 4731, RFC 5267 §3 for SORT), and
    $ saved (RFC 5182; SAVE alone sends no ESEARCH)."""
    view = s.view
    uids = view.uids
    numbers = [uids[i] for i in order] if uid else [i + 1 for i in order]
    modseqs = [view.modseqs[i] for i in order] if args.uses_modseq else None
    if args.returns is None:
        line = b"* " + name + b"".join(b" %d" % n for n in numbers)
        if modseqs:
            line += b" (MODSEQ %d)" % max(modseqs)
        s.write(line + b"\r\n")
        return
    if "SAVE" in args.returns:
        view.saved = _saved(view, args, order)
        if args.returns == {"SAVE"}:
            return
    s.write(_esearch(tag, uid, args.returns, args.partial, numbers, modseqs))


def _esearch(
    tag: str,
    uid: bool,
    returns: frozenset[str],
    partial: tuple[int, int] | None,
    numbers: list[int],
    modseqs: list[int] | None,
) -> bytes:
    """RFC 4731 §3.1: `* ESEARCH (TAG "t") [UID] MIN n MAX n COUNT n ALL set`, always sent; MIN, MAX and
    ALL left out when nothing matched; ALL in the order found (SORT's, RFC 5267 §3.2). PARTIAL (RFC
    9394 §3.1): `PARTIAL (range set)`, NIL for an empty window. `modseqs` (the matches' MODSEQs, when
    the criteria name MODSEQ, RFC 4731 §3.2) adds the highest of the messages reported: all for ALL or
    COUNT, the window's for PARTIAL, else MIN's and MAX's."""
    out = [b"* ESEARCH (TAG " + rsp.string(tag) + b")"]
    if uid:
        out.append(b"UID")
    if numbers:  # the first and the last found: for SORT "the lowest/highest sorted" (RFC 5267 §3.1)
        low, high = numbers[0], numbers[-1]
        if "MIN" in returns:
            out.append(b"MIN %d" % low)
        if "MAX" in returns:
            out.append(b"MAX %d" % high)
    if "COUNT" in returns:
        out.append(b"COUNT %d" % len(numbers))
    if numbers and "ALL" in returns:
        out.append(b"ALL " + rsp.uid_set(numbers).encode())
    reported: list[int] = []
    if partial is not None:
        a, b = partial
        shown = window(numbers, partial)
        written = f"{a}:{b}" if a > 0 else f"{b}:{a}"
        out.append(f"PARTIAL ({written} {rsp.uid_set(shown) or 'NIL'})".encode())
        if modseqs:
            reported = window(modseqs, partial)
    if modseqs:
        if returns & {"ALL", "COUNT"}:
            reported = modseqs
        else:
            if "MIN" in returns:
                reported.append(modseqs[0])
            if "MAX" in returns:
                reported.append(modseqs[-1])
        if reported:
            out.append(b"MODSEQ %d" % max(reported))
    return b" ".join(out) + b"\r\n"


async def cmd_search(s: Session, cmd: Command) -> Reply | None:
    return await _search(s, cmd, uid=False)


async def cmd_uid_search(s: Session, cmd: Command) -> Reply | None:
    return await _search(s, cmd, uid=True)
