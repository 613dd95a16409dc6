"""Selected-state commands that change the mailbox's set of messages: CHECK, CLOSE, UNSELECT, EXPUNGE,
UID EXPUNGE (RFC 4315), COPY, MOVE (RFC 6851) and their UID forms, with UIDPLUS COPYUID.

A read-only (EXAMINEd) mailbox refuses EXPUNGE and MOVE with NO [READ-ONLY]; CLOSE on it expunges
nothing. The removed messages are told as EXPUNGE, or as one VANISHED of their UIDs after ENABLE
QRESYNC (RFC 7162 §3.2.7, view.remove). A missing destination is NO [TRYCREATE]. The destination may be the selected mailbox itself:
the copies get new UIDs and come as EXISTS in the sync after the command (after MOVE's EXPUNGEs). When the store fails half-way the command is NO and
the next sync tells the client what did happen (the store's changes are the truth, not our guess).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailflow.errors import NotFound
from mailflow_imap_pop3.imap import errors
from mailflow_imap_pop3.imap import responses as rsp
from mailflow_imap_pop3.imap.responses import Reply
from mailflow_imap_pop3.imap.syntax import Command, CopyMove, SeqArg

if TYPE_CHECKING:
    from mailflow_imap_pop3.imap.session import Session


async def cmd_check(s: Session, cmd: Command) -> Reply | None:
    return None  # every change is durable already; the sync after the command reports news


async def cmd_close(s: Session, cmd: Command) -> Reply | None:
    view = s.view
    if view is not None and not view.readonly:
        await s.store.expunge(s.principal, view.mailbox_id)  # silently: no EXPUNGE responses (§6.4.2)
    await s.deselect()
    return None


async def cmd_unselect(s: Session, cmd: Command) -> Reply | None:
    await s.deselect()
    return None


async def _expunge(s: Session, uids: list[int] | None) -> Reply | None:
    view = s.view
    if view.readonly:
        return errors.R_READ_ONLY
    if uids is not None and not uids:
        return None
    removed = await s.store.expunge(s.principal, view.mailbox_id, uids)
    for line in view.remove(removed):
        s.write(line)
    return None


async def cmd_expunge(s: Session, cmd: Command) -> Reply | None:
    return await _expunge(s, None)


async def cmd_uid_expunge(s: Session, cmd: Command) -> Reply | None:
    args: SeqArg = cmd.args
    return await _expunge(s, [s.view.uids[i] for i in s.targets(args.seqset, uid=True)])


async def _copy(s: Session, cmd: Command, uid: bool, move: bool) -> Reply | None:
    args: CopyMove = cmd.args
    view = s.view
    if move and view.readonly:
        return errors.R_READ_ONLY
    uids = [view.uids[i] for i in s.targets(args.seqset, uid)]
    if not uids:
        return Reply("OK", f"{cmd.name} completed, no messages")
    try:
        if move:
            res = await s.store.move(s.principal, view.mailbox_id, uids, args.mailbox)
        else:
            res = await s.store.copy(s.principal, view.mailbox_id, uids, args.mailbox)
    except NotFound:
        return errors.R_TRYCREATE
    if args.mailbox == view.name:
        view.look_again()
    code = None
    if res.source_uids:
        code = f"COPYUID {res.uidvalidity} {rsp.uid_set(res.source_uids)} {rsp.uid_set(res.dest_uids)}"
    if move:
        if code:
            s.write(rsp.ok_code(code, "Moved"))
        for line in view.remove(res.source_uids):
            s.write(line)
        return Reply("OK", f"{cmd.name} completed")
    return Reply("OK", f"{cmd.name} completed", code)


async def cmd_copy(s: Session, cmd: Command) -> Reply | None:
    return await _copy(s, cmd, uid=False, move=False)


async def cmd_uid_copy(s: Session, cmd: Command) -> Reply | None:
    return await _copy(s, cmd, uid=True, move=False)


async def cmd_move(s: Session, cmd: Command) -> Reply | None:
    return await _copy(s, cmd, uid=False, move=True)


async def cmd_uid_move(s: Session, cmd: Command) -> Reply | None:
    return await _copy(s, cmd, uid=True, move=True)
