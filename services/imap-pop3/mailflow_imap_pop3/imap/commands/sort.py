"""SORT, UID SORT, THREAD and UID THREAD (RFC 5256; RFC 5267 §3 ESORT's RETURN; RFC 5957 DISPLAYFROM and
DISPLAYTO). The criteria are resolved as SEARCH's (search.resolve: sequence numbers, "$", \\Recent become
UIDs) and bounded to the messages the client knows; the store selects, sorts and threads (its
sorting.py) and answers UIDs in order. The reply is SEARCH's (search.answer) for SORT, and
responses.thread for THREAD. A store failure is the session's usual NO; a bad criterion, charset or
algorithm was BAD / NO [BADCHARSET] in the parser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailflow.store import search as sk
from mailflow_imap_pop3.imap import responses as rsp
from mailflow_imap_pop3.imap.commands import context
from mailflow_imap_pop3.imap.commands.search import answer, resolve
from mailflow_imap_pop3.imap.responses import Reply
from mailflow_imap_pop3.imap.syntax import Command, Sort, Thread
from mailflow_imap_pop3.imap.view import MailboxView

if TYPE_CHECKING:
    from mailflow_imap_pop3.imap.session import Session


def _known(view: MailboxView, key) -> sk.SearchKey:
    """The resolved criteria limited to the UIDs the client has been told of (new mail shows up as
    EXISTS first)."""
    return sk.And((key, sk.Uids(((1, view.uids[-1]),))))


async def _sort(s: Session, cmd: Command, uid: bool) -> Reply | None:
    args: Sort = cmd.args
    view = s.view
    if args.search.uses_modseq:
        s.condstore = True
    key = resolve(args.search.key, view)  # "$" as it was before this search
    returns = args.search.returns
    if returns is not None and "SAVE" in returns:
        view.saved = []  # RFC 5182 §2.1: a search that fails leaves $ empty
    order: list[int] = []
    if view.uids:
        found = await s.store.sort(s.principal, view.mailbox_id, _known(view, key), list(args.criteria))
        order = [i for u in found if (i := view.index_of(u)) is not None]
    answer(s, cmd.tag, uid, args.search, order, b"SORT")
    if returns is not None and "UPDATE" in returns:
        context.start(s, cmd.tag, uid, args.search, key, args.criteria, order)
    return None


async def _thread(s: Session, cmd: Command, uid: bool) -> Reply | None:
    args: Thread = cmd.args
    view = s.view
    nodes: list[tuple[int, int]] = []
    if view.uids:
        found = await s.store.thread(
            s.principal, view.mailbox_id, _known(view, resolve(args.search.key, view)), args.algorithm
        )
        for u, depth in found:  # a UID the view does not have (cannot happen) is shown as a dummy
            i = view.index_of(u) if u else None
            nodes.append((0 if i is None else u if uid else i + 1, depth))
    s.write(rsp.thread(nodes))
    return None


async def cmd_sort(s: Session, cmd: Command) -> Reply | None:
    return await _sort(s, cmd, uid=False)


async def cmd_uid_sort(s: Session, cmd: Command) -> Reply | None:
    return await _sort(s, cmd, uid=True)


async def cmd_thread(s: Session, cmd: Command) -> Reply | None:
    return await _thread(s, cmd, uid=False)


async def cmd_uid_thread(s: Session, cmd: Command) -> Reply | None:
    return await _thread(s, cmd, uid=True)
