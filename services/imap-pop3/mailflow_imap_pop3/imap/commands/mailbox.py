"""Authenticated-state commands on mailboxes: SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE,
UNSUBSCRIBE, LIST (with RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS, RFC 6154 SPECIAL-USE), LSUB,
STATUS and APPEND (RFC 3501 §6.3, UIDPLUS APPENDUID, RFC 7889 APPENDLIMIT, RFC 4469 CATENATE in
catenate.py).

A mailbox that does not exist is NO [NONEXISTENT] (NO [TRYCREATE] for APPEND, as RFC 3501 asks);
the store's Conflict is NO [ALREADYEXISTS], its Invalid NO [CANNOT]. A failed SELECT leaves the
session in the authenticated state (RFC 3501 §6.3.1), even when a mailbox was selected before.
SELECT/EXAMINE (QRESYNC ...) without ENABLE QRESYNC is BAD and changes nothing (RFC 7162 §3.2.5); with
it, the changes since the client's MODSEQ follow the usual responses (qresync.py).
"""

from __future__ import annotations

import asyncio
from itertools import compress, count
from typing import TYPE_CHECKING

from mailflow.errors import Invalid, NotFound
from mailflow.store.api import DELIMITER, MailboxInfo, Selected
from mailflow_imap_pop3.imap import errors
from mailflow_imap_pop3.imap import responses as rsp
from mailflow_imap_pop3.imap.commands import catenate
from mailflow_imap_pop3.imap.commands.quota import quota_units
from mailflow_imap_pop3.imap.lexer import normalize_mailbox
from mailflow_imap_pop3.imap.patterns import MailboxPattern
from mailflow_imap_pop3.imap.qresync import vanished
from mailflow_imap_pop3.imap.responses import Reply
from mailflow_imap_pop3.imap.syntax import (
    Append,
    Command,
    ListCmd,
    MailboxArg,
    Qresync,
    Rename,
    Select,
    Status,
)
from mailflow_imap_pop3.imap.view import MailboxView

if TYPE_CHECKING:
    from mailflow_imap_pop3.imap.session import Session


# --- SELECT / EXAMINE ---------------------------------------------------------------------------------


async def _open(s: Session, cmd: Command, readonly: bool) -> Reply:
    args: Select = cmd.args
    q = args.qresync
    if q is not None and not s.qresync:  # RFC 7162 §3.2.5: BAD, and nothing else happens
        raise errors.bad("QRESYNC parameter without ENABLE QRESYNC")
    if args.condstore:
        s.condstore = True
    had_view = s.view is not None
    s.drop_view()  # from here on a failure leaves the session authenticated, nothing selected
    if had_view and (s.condstore or s.rev2):  # RFC 7162 §3.2.11, RFC 9051 §6.3.2
        s.write(b"* OK [CLOSED] Previous mailbox closed\r\n")
    if cmd.invalid_name is not None:  # not modified UTF-7: no mailbox has that name
        if had_view:
            await s.unwatch()
        raise errors.no(*cmd.invalid_name)
    if not had_view:
        await s.watch()  # subscribe before the snapshot: no change between the two goes unseen
    try:
        since = q.modseq if q is not None else None
        # a rev2 session has no \Recent: it claims none, so IMAP4rev1 sessions still see them
        selecting = s.store.select(
            s.principal, args.mailbox, claim_recent=not readonly and not s.rev2, vanished_since=since
        )
        if s.rev2:  # RFC 9051 §6.3.2: the mailbox's LIST response too, so the listing is read alongside
            sel, infos = await asyncio.gather(selecting, s.store.list_mailboxes(s.principal))
        else:
            sel = await selecting
    except BaseException:
        await s.unwatch()
        raise
    view = MailboxView(sel.status.name, sel, readonly, qresync=s.qresync)
    if s.rev2:
        view.rev2, view.recent = True, set()
    s.write(b"* FLAGS " + rsp.flags(view.flag_names()) + b"\r\n")
    if readonly:
        s.write(b"* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n")
    else:
        perm = view.flag_names() + (["\\*"] if sel.permanent_keywords else [])
        s.write(b"* OK [PERMANENTFLAGS " + rsp.flags(perm) + b"] Flags permitted\r\n")
    s.write(b"* %d EXISTS\r\n" % view.exists)
    if not s.rev2:
        s.write(b"* %d RECENT\r\n" % len(view.recent))
    else:
        info = next((m for m in infos if m.id == sel.status.id), None)
        if info is not None:
            s.write(list_line(s, "LIST", _attributes(info), info.name))
    unseen = view.first_unseen()
    if unseen is not None:
        s.write(b"* OK [UNSEEN %d] First unseen\r\n" % unseen)
    s.write(
        b"* OK [UIDVALIDITY %d] UIDs valid\r\n* OK [UIDNEXT %d] Predicted next UID\r\n"
        b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % (view.uidvalidity, view.uidnext, view.highestmodseq)
    )
    s.write(b"* OK [MAILBOXID (%s)] Ok\r\n" % rsp.mailbox_id(sel.status.id).encode())
    if q is not None and q.uidvalidity == view.uidvalidity:  # another UIDVALIDITY: nothing to resync
        _resync(s, view, q, sel)
    await s.select(view)
    return Reply("OK", f"{cmd.name} completed", "READ-ONLY" if readonly else "READ-WRITE")


def _resync(s: Session, view: MailboxView, q: Qresync, sel: Selected) -> None:
    """RFC 7162 §3.2.5.1: VANISHED (EARLIER) for the known UIDs expunged since the client's MODSEQ, then
    FETCH (UID FLAGS MODSEQ) for every message changed since. Only the changes travel; the listing the
    store sent is scanned once here (a few ms for 100,000 messages)."""
    top = view.uidnext - 1
    known = (
        [(1, top)]
        if q.known_uids is None
        else [(lo, min(hi, top)) for lo, hi in q.known_uids.ranges if lo <= top]
    )
    match = None if q.match is None else (list(q.match[0].ranges), list(q.match[1].ranges))
    # a store that did not answer vanished_since (one older than this server) left the list out: then
    # the tombstones count as incomplete, and every known UID not present is reported
    complete = sel.vanished is not None and sel.vanished_complete
    gone = vanished(view.uids, known, sel.vanished or [], complete, match)
    for line in rsp.vanished(gone, earlier=True):
        s.write(line)
    for i in compress(count(), map(q.modseq.__lt__, view.modseqs)):  # the scan in C: ~1 ms per 100,000
        s.write(view.fetch_flags_line(i, uid=True, modseq=True))


async def cmd_select(s: Session, cmd: Command) -> Reply | None:
    return await _open(s, cmd, readonly=False)


async def cmd_examine(s: Session, cmd: Command) -> Reply | None:
    return await _open(s, cmd, readonly=True)


# --- the folder tree --------------------------------------------------------------------------------


async def cmd_create(s: Session, cmd: Command) -> Reply | None:
    args: MailboxArg = cmd.args
    name = args.mailbox.rstrip(DELIMITER)  # "foo/" announces children to come (RFC 3501 §6.3.3)
    if not name or "*" in name or "%" in name:
        return Reply("NO", "Invalid mailbox name", "CANNOT")
    if name == "INBOX":
        return errors.R_EXISTS
    info = await s.store.create_mailbox(s.principal, name, args.special_use)
    return Reply("OK", "CREATE completed", f"MAILBOXID ({rsp.mailbox_id(info.id)})")


async def cmd_delete(s: Session, cmd: Command) -> Reply | None:
    args: MailboxArg = cmd.args
    if args.mailbox == "INBOX":
        return Reply("NO", "INBOX cannot be deleted", "CANNOT")
    try:
        await s.store.delete_mailbox(s.principal, args.mailbox)
    except Invalid:  # RFC 9051 §6.3.5, §7.1: a \Noselect name with children stays, NO [HASCHILDREN]
        info = next((m for m in await s.store.list_mailboxes(s.principal) if m.name == args.mailbox), None)
        if info is not None and info.has_children and not info.selectable:
            return Reply("NO", "Mailbox has child mailboxes and holds no messages", "HASCHILDREN")
        raise
    if s.view is not None and s.view.name == args.mailbox:
        s.view.dirty = True  # the sync finds it gone and says BYE, as other sessions will hear
    return None


async def cmd_rename(s: Session, cmd: Command) -> Reply | None:
    args: Rename = cmd.args
    if "*" in args.new or "%" in args.new or not args.new.strip(DELIMITER):
        return Reply("NO", "Invalid mailbox name", "CANNOT")
    if args.new == "INBOX":
        return errors.R_EXISTS
    await s.store.rename_mailbox(s.principal, args.old, args.new.rstrip(DELIMITER))
    if s.view is not None:
        if s.view.name == args.old and args.old != "INBOX":
            s.view.name = args.new.rstrip(DELIMITER)
        elif s.view.name == "INBOX" and args.old == "INBOX":
            s.view.dirty = True  # its messages left
    return None


async def cmd_subscribe(s: Session, cmd: Command) -> Reply | None:
    await s.store.subscribe(s.principal, cmd.args.mailbox, True)
    return None


async def cmd_unsubscribe(s: Session, cmd: Command) -> Reply | None:
    await s.store.subscribe(s.principal, cmd.args.mailbox, False)
    return None


# --- LIST / LSUB ----------------------------------------------------------------------------------------


def _ancestors(name: str) -> list[str]:
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


def _order(name: str) -> tuple:
    return (name != "INBOX" and not name.startswith("INBOX/"), name)


def _attributes(info: MailboxInfo) -> list[str]:
    """The mailbox attributes of an existing mailbox, as LIST (and a rev2 SELECT) give them."""
    attrs = [] if info.selectable else ["\\Noselect"]
    attrs.append("\\HasChildren" if info.has_children else "\\HasNoChildren")
    if info.special_use:
        attrs.append(info.special_use)
    return attrs


def list_line(s: Session, kind: str, attrs: list[str], name: str, extra: bytes = b"") -> bytes:
    head = f"* {kind} (".encode() + " ".join(attrs).encode() + b') "/" '
    return head + rsp.mailbox(name, s.rev2) + extra + rsp.CRLF


_NEED_DELETED = frozenset({"DELETED", "DELETED-STORAGE"})  # a second question to the store, only when asked


async def status_line(s: Session, name: str, items: tuple[str, ...]) -> bytes:
    st = await s.store.status(s.principal, name)
    values = {
        "MESSAGES": st.messages, "RECENT": st.recent, "UIDNEXT": st.uidnext, "UIDVALIDITY": st.uidvalidity,
        "UNSEEN": st.unseen, "HIGHESTMODSEQ": st.highestmodseq, "SIZE": st.size,
        "MAILBOXID": f"({rsp.mailbox_id(st.id)})",
    }  # fmt: skip
    if not _NEED_DELETED.isdisjoint(items):
        d = await s.store.deleted(s.principal, name)
        values["DELETED"] = d.messages
        values["DELETED-STORAGE"] = quota_units(d.size)  # in units of 1024 octets, as STORAGE (RFC 9208)
    body = " ".join(f"{item} {values[item]}" for item in items)
    return b"* STATUS " + rsp.mailbox(st.name, s.rev2) + b" (" + body.encode() + b")\r\n"


async def _subscriptions(s: Session) -> tuple[dict[str, MailboxInfo], set[str]]:
    """The mailboxes and every subscribed name, whether a mailbox has it or not (two reads at once)."""
    p = s.principal
    infos, subs = await asyncio.gather(s.store.list_mailboxes(p), s.store.subscriptions(p))
    return {m.name: m for m in infos}, set(subs)


async def cmd_list(s: Session, cmd: Command) -> Reply | None:
    """RFC 5258: the selection options say which names are returned (SUBSCRIBED: the subscribed ones,
    existing or not; RECURSIVEMATCH: also a matching name with a subscribed name below it, marked CHILDINFO;
    SPECIAL-USE; REMOTE: we have no remote mailboxes), the return options what is said of each."""
    args: ListCmd = cmd.args
    if len(args.patterns) == 1 and args.patterns[0] == "" and not args.extended:
        s.write(b'* LIST (\\Noselect) "/" ""\r\n')  # the delimiter and the root (RFC 3501 §6.3.8)
        return None
    subscribed_only = "SUBSCRIBED" in args.select_opts
    if subscribed_only:
        boxes, subscribed = await _subscriptions(s)
    else:
        boxes = {m.name: m for m in await s.store.list_mailboxes(s.principal)}
        subscribed = {n for n, m in boxes.items() if m.subscribed}
    patterns = [
        MailboxPattern(normalize_mailbox(args.reference + p)) for p in args.patterns if p or args.reference
    ]
    special_only = "SPECIAL-USE" in args.select_opts
    recursive = subscribed_only and "RECURSIVEMATCH" in args.select_opts

    def matches(name: str) -> bool:
        return any(p.matches(name) for p in patterns)

    known = set(boxes) | subscribed if subscribed_only else set(boxes)
    parents = {parent for name in boxes for parent in _ancestors(name)}  # names with a mailbox below
    sub_parents = {parent for name in subscribed for parent in _ancestors(name)} if recursive else set()
    candidates = [n for n in known if matches(n)]
    for parent in (parents | sub_parents) - known:  # names that exist only above others (\NonExistent)
        if matches(parent):
            candidates.append(parent)
    lines: list[bytes] = []
    for name in sorted(candidates, key=_order):
        info = boxes.get(name)
        is_sub = name in subscribed
        child_sub = name in sub_parents  # RECURSIVEMATCH: a subscribed name below this one
        if subscribed_only and not is_sub and not child_sub:
            continue
        if special_only and (info is None or not info.special_use):
            continue
        if info is None:
            attrs = ["\\NonExistent", "\\HasChildren"] if name in parents else ["\\NonExistent"]
        else:
            attrs = _attributes(info)
        if is_sub and "SUBSCRIBED" in args.return_opts:
            attrs.append("\\Subscribed")
        extra = b' ("CHILDINFO" ("SUBSCRIBED"))' if child_sub else b""
        lines.append(list_line(s, "LIST", attrs, name, extra))
        if info is not None and info.selectable and "STATUS" in args.return_opts:
            try:
                lines.append(await status_line(s, name, args.status_items))
            except NotFound:
                pass
    for line in lines:
        s.write(line)
    return None


async def cmd_lsub(s: Session, cmd: Command) -> Reply | None:
    """RFC 3501 §6.3.9: the subscription list, a name whose mailbox is gone too (\\Noselect)."""
    args: ListCmd = cmd.args
    if not args.patterns:  # not modified UTF-7: matches nothing
        return None
    pattern = normalize_mailbox(args.reference + args.patterns[0])
    if not pattern:
        s.write(b'* LSUB (\\Noselect) "/" ""\r\n')
        return None
    wanted = MailboxPattern(pattern)
    boxes, subscribed = await _subscriptions(s)

    def attrs(name: str) -> list[str]:
        info = boxes.get(name)
        return [] if name in subscribed and info is not None and info.selectable else ["\\Noselect"]

    out: dict[str, list[str]] = {}
    for name in subscribed:
        if wanted.matches(name):
            out[name] = attrs(name)
        elif "%" in pattern:  # RFC 3501 §6.3.9: a subscribed child makes a matching parent \Noselect
            for parent in _ancestors(name):
                if wanted.matches(parent) and parent not in out:
                    out[parent] = attrs(parent)
    for name in sorted(out, key=_order):
        s.write(list_line(s, "LSUB", out[name], name))
    return None


# --- STATUS / APPEND ------------------------------------------------------------------------------------


async def cmd_status(s: Session, cmd: Command) -> Reply | None:
    args: Status = cmd.args
    if "HIGHESTMODSEQ" in args.items:
        s.condstore = True
    s.write(await status_line(s, args.mailbox, args.items))
    return None


async def cmd_append(s: Session, cmd: Command) -> Reply | None:
    args: Append = cmd.args
    if any(not item.message and item.parts is None for item in args.items):
        return Reply("NO", "Cannot append an empty message", "CANNOT")
    items = await catenate.messages(s, args.items)  # CATENATE (RFC 4469) URLs and TEXT put together
    if any(not message for message, _, _ in items):
        return Reply("NO", "Cannot append an empty message", "CANNOT")
    try:
        res = await s.store.append_many(s.principal, args.mailbox, items)
    except NotFound:
        return errors.R_TRYCREATE
    if s.view is not None and s.view.name == args.mailbox:
        s.view.dirty = True  # tell the client about its new message (EXISTS) at the end of this command
    uids = rsp.uid_set(res.uids)  # RFC 4315 §3 and RFC 3502: one UID, or the set of a MULTIAPPEND
    return Reply("OK", "APPEND completed", f"APPENDUID {res.uidvalidity} {uids}")
