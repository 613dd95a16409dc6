"""STORE and UID STORE: +FLAGS, -FLAGS, FLAGS, .SILENT (RFC 3501 §6.4.6) and UNCHANGEDSINCE (RFC 7162).

A read-only mailbox is NO [READ-ONLY]. Messages another session expunged (still numbered here until
we may say EXPUNGE) are skipped and the command ends NO [EXPUNGEISSUED] (RFC 2180 §4.2.1); messages
refused by UNCHANGEDSINCE are listed in OK [MODIFIED ...]. No EXPUNGE is ever sent during STORE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailflow_imap_pop3.imap import errors
from mailflow_imap_pop3.imap import responses as rsp
from mailflow_imap_pop3.imap.responses import Reply
from mailflow_imap_pop3.imap.syntax import Command, Store

if TYPE_CHECKING:
    from mailflow_imap_pop3.imap.session import Session


async def _store(s: Session, cmd: Command, uid: bool) -> Reply | None:
    args: Store = cmd.args
    view = s.view
    if view.readonly:
        return errors.R_READ_ONLY
    if args.unchanged_since is not None:
        s.condstore = True
    indexes = s.targets(args.seqset, uid)
    uids = [view.uids[i] for i in indexes if view.uids[i] not in view.pending_expunge]
    gone = len(uids) < len(indexes)
    if uids:
        res = await s.store.store_flags(
            s.principal, view.mailbox_id, uids, args.op, frozenset(args.flags), args.unchanged_since
        )
        new_keywords = view.update_flags(res.updated)
        if new_keywords:
            s.write(b"* FLAGS " + rsp.flags(view.flag_names()) + rsp.CRLF)
            s.write(
                b"* OK [PERMANENTFLAGS " + rsp.flags([*view.flag_names(), "\\*"]) + b"] Flags permitted\r\n"
            )
        for meta in res.updated:
            i = view.index_of(meta.uid)
            if i is None:
                continue
            if not args.silent:
                s.write(view.fetch_flags_line(i, uid=uid, modseq=s.condstore))
            elif s.condstore:  # RFC 7162 §3.2: the client's cache needs the new MODSEQ even when silent
                s.write(b"* %d FETCH (UID %d MODSEQ (%d))\r\n" % (i + 1, meta.uid, meta.modseq))
        gone = gone or len(res.updated) + len(res.modified) < len(uids)
        if res.modified:
            numbers = (
                res.modified
                if uid
                else [view.index_of(u) + 1 for u in res.modified if view.index_of(u) is not None]
            )
            return Reply(
                "OK", "Conditional STORE failed for some messages", f"MODIFIED {rsp.uid_set(numbers)}"
            )
    if gone:
        return errors.R_EXPUNGED
    return None


async def cmd_store(s: Session, cmd: Command) -> Reply | None:
    return await _store(s, cmd, uid=False)


async def cmd_uid_store(s: Session, cmd: Command) -> Reply | None:
    return await _store(s, cmd, uid=True)
