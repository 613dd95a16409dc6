"""NOTIFY (RFC 5465): news of the user's other mailboxes, and of the selected one between commands.

What we hear is the store's MailboxEvent stream (push.Hub, `mailbox.events.<user_id>`), so the events
offered are the ones it carries: MessageNew ("appended"), MessageExpunge ("expunged"), FlagChange
("flags") and MailboxName ("mailbox_created/deleted/renamed"). SubscriptionChange, AnnotationChange and
the METADATA events are not in the stream: NOTIFY SET naming one is NO [BADEVENT (<the four>)].

- The selected mailbox follows the SELECTED / SELECTED-DELAYED group (none: news only at the end of
  commands, as before): its EXISTS, FETCH and, for SELECTED, EXPUNGE come as soon as they happen,
  while the client sits between commands (RFC 5465 §1, not only in IDLE), then FETCH of MessageNew's
  fetch-att for the new messages (fetch.send, the FETCH path). SELECTED-DELAYED keeps EXPUNGEs for
  the end of a command that allows them.
- Any other mailbox gets what every group naming it asks for (§6; PERSONAL and INBOXES: all of the
  user's, since Sieve's fileinto can deliver into any; SUBSCRIBED, looked up when the news is told;
  SUBTREE; MAILBOXES): a message event there is `* STATUS name (MESSAGES UIDNEXT UIDVALIDITY UNSEEN
  [HIGHESTMODSEQ])`, asked of the store when it is sent (so one line says a burst of changes); a
  MailboxName event a `* LIST`, with ("OLDNAME" (...)) after a rename. SET STATUS sends those STATUS
  lines at once for every mailbox the groups watch.
- Buffering is bounded: at most MAX_PENDING mailboxes and MAX_NAMES name changes wait to be told.
  Past that the session says `* OK [NOTIFICATIONOVERFLOW]` and NOTIFY is off (§5.8, as NOTIFY NONE).
  A mailbox that is gone by the time its STATUS would go is skipped (its MailboxName says why).
- Not done: the selected mailbox's news at the end of commands stays as before even without a SELECTED
  group (§3.1 would drop it: RFC 3501's sequence numbers need it); changes this session made itself
  are told too (§5 SHOULD omit them: sessions of one login share a store token, so the event's origin
  cannot tell them apart); a created or deleted mailbox's parent gets no LIST (§5.4).
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_right
from typing import TYPE_CHECKING

from mailflow.contracts.messages import MailboxEvent
from mailflow.errors import NotFound
from mailflow.store.api import DELIMITER
from mailflow_imap_pop3.imap import errors
from mailflow_imap_pop3.imap import responses as rsp
from mailflow_imap_pop3.imap.commands import fetch
from mailflow_imap_pop3.imap.commands.mailbox import list_line, status_line
from mailflow_imap_pop3.imap.responses import Reply
from mailflow_imap_pop3.imap.syntax import Command, FetchAtt, Notify, NotifyGroup

if TYPE_CHECKING:
    from mailflow_imap_pop3.imap.session import Session

log = logging.getLogger(__name__)

SUPPORTED = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName")
R_BADEVENT = Reply("NO", "Event not supported", f"BADEVENT ({' '.join(SUPPORTED)})")
MAX_PENDING = 1000  # mailboxes with news waiting to be told
MAX_NAMES = 256  # mailbox name changes waiting to be told
_EVENT_OF = {
    "appended": "MessageNew", "expunged": "MessageExpunge", "flags": "FlagChange",
    "mailbox_created": "MailboxName", "mailbox_deleted": "MailboxName", "mailbox_renamed": "MailboxName",
}  # fmt: skip
_STATUS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN")


class Notifier:
    """One session's NOTIFY SET: which events of which mailboxes, and what waits to be told."""

    def __init__(self, groups: tuple[NotifyGroup, ...]):
        self.selected = next((g for g in groups if g.filter.startswith("SELECTED")), None)
        self.others = [g for g in groups if not g.filter.startswith("SELECTED")]
        self.subscriptions = any(g.filter == "SUBSCRIBED" for g in self.others)
        self.names_wanted = any("MailboxName" in g.events for g in self.others)
        self.pending: dict[int, tuple[str, set[str]]] = {}  # mailbox id -> (name, events) to tell
        self.names: list[MailboxEvent] = []
        self.known: dict[int, str] = {}  # mailbox id -> name, for a rename's OLDNAME
        self.overflow = False
        self.wake = asyncio.Event()

    def selected_wants(self, kind: str) -> bool:
        return self.selected is not None and _EVENT_OF.get(kind) in self.selected.events

    def events_for(self, name: str, subscribed: set[str]) -> set[str]:
        """What the groups naming this (not selected) mailbox ask for, together (RFC 5465 §6: several
        groups may apply to one mailbox). `subscribed`: the user's subscriptions, looked up only when a
        SUBSCRIBED group is there."""
        out: set[str] = set()
        for g in self.others:
            if _names(g, name, subscribed):
                out.update(g.events)
        return out

    def wants(self, name: str, what: str) -> bool:
        """Could this event of this (not selected) mailbox be asked for? SUBSCRIBED groups are taken to
        name it: subscriptions are looked up once, when the news is told, and `deliver` decides then."""
        return any(
            what in g.events and (g.filter == "SUBSCRIBED" or _names(g, name, set())) for g in self.others
        )

    def add(self, event: MailboxEvent) -> bool:
        """An event for a mailbox that is not selected; True when it is to be told."""
        what = _EVENT_OF.get(event.kind)
        if what is None or self.overflow or not self.wants(event.mailbox, what):
            if what == "MailboxName":
                self.renamed(event)
            return False
        if what == "MailboxName":
            if len(self.names) >= MAX_NAMES:
                return self._overflow()
            self.names.append(event)
            return True
        entry = self.pending.get(event.mailbox_id)
        if entry is None:
            if len(self.pending) >= MAX_PENDING:
                return self._overflow()
            self.pending[event.mailbox_id] = (event.mailbox, {what})
        else:
            entry[1].add(what)
        return True

    def _overflow(self) -> bool:
        self.overflow = True
        self.pending.clear()
        self.names.clear()
        return True

    def renamed(self, event: MailboxEvent) -> str | None:
        """Keep `known` current; the name the mailbox had before a rename, if we knew it."""
        if event.kind == "mailbox_deleted":
            return self.known.pop(event.mailbox_id, None)
        old = self.known.get(event.mailbox_id)
        if len(self.known) < MAX_PENDING or event.mailbox_id in self.known:
            self.known[event.mailbox_id] = event.mailbox
        return old


def _names(g: NotifyGroup, name: str, subscribed: set[str]) -> bool:
    f = g.filter
    return (
        f in ("PERSONAL", "INBOXES")  # §6.3: Sieve's fileinto delivers anywhere, so INBOXES is PERSONAL
        or (f == "SUBSCRIBED" and name in subscribed)
        or (f == "MAILBOXES" and name in g.mailboxes)
        or (f == "SUBTREE" and _in_subtree(name, g.mailboxes))
    )


def _in_subtree(name: str, roots: frozenset[str]) -> bool:
    """The name or one of its ancestors is among the roots: as many set lookups as the name has levels."""
    while True:
        if name in roots:
            return True
        name, sep, _ = name.rpartition(DELIMITER)
        if not sep:
            return False


async def cmd_notify(s: Session, cmd: Command) -> Reply | None:
    args: Notify = cmd.args
    if args.groups is None:
        await s.set_notifier(None)
        return None
    if any(e not in SUPPORTED for g in args.groups for e in g.events):
        return R_BADEVENT  # RFC 5465 §3.1: the NOTIFY SET fails as a whole, the one before stays
    n = Notifier(args.groups)
    boxes = await s.store.list_mailboxes(s.principal) if n.names_wanted or args.status else []
    if n.names_wanted:
        n.known = {m.id: m.name for m in boxes[:MAX_PENDING]}
    await s.set_notifier(n)
    hub = s.ctx.hub
    if hub.nc is not None and not hub.subscribed(s.principal.user_id):  # no events would come
        await s.set_notifier(None)
        return errors.R_UNAVAILABLE
    if args.status:
        subscribed = {m.name for m in boxes if m.subscribed}
        for m in boxes:
            if not m.selectable or (s.view is not None and m.id == s.view.mailbox_id):
                continue
            if {"MessageNew", "MessageExpunge", "FlagChange"} & n.events_for(m.name, subscribed):
                await _status(s, m.name)
    return None


async def _subscribed(s: Session, n: Notifier) -> set[str]:
    if not n.subscriptions:
        return set()
    return {m.name for m in await s.store.list_mailboxes(s.principal) if m.subscribed}


async def _status(s: Session, name: str) -> None:
    items = (*_STATUS, "HIGHESTMODSEQ") if s.condstore else _STATUS
    try:
        s.write(await status_line(s, name, items))
    except NotFound:
        pass  # gone meanwhile: its MailboxName event says so, if asked for


async def deliver(s: Session, idle: bool = False) -> None:
    """Tell what waits: the selected mailbox's news (in IDLE always, else as its group says), then the
    other mailboxes' STATUS and LIST lines. Ends NOTIFY with NOTIFICATIONOVERFLOW when it overflowed."""
    n = s.notifier
    if n is None:
        if idle:
            await s.sync(allow_expunge=True)
        return
    n.wake.clear()
    view = s.view
    if view is not None and (idle or (n.selected is not None and n.selected.events)):
        top = view.uids[-1] if view.uids else 0
        await s.sync(allow_expunge=idle or n.selected.filter == "SELECTED")
        if n.selected is not None and n.selected.fetch and s.view is view:
            new = list(range(bisect_right(view.uids, top), len(view.uids)))
            if new:
                atts = n.selected.fetch
                if not any(a.name == "UID" for a in atts):
                    atts = (FetchAtt("UID"), *atts)
                try:
                    await fetch.send(s, atts, new)
                except Exception as exc:  # the store did not answer: FETCH them yourself
                    log.warning("MessageNew fetch not sent: %s", exc)
    if n.overflow:
        s.write(rsp.ok_code("NOTIFICATIONOVERFLOW", "Too many notifications: NOTIFY is off"))
        await s.set_notifier(None)
        return
    if not n.pending and not n.names:
        return
    pending, names = n.pending, n.names
    n.pending, n.names = {}, []
    try:
        await _tell(s, n, pending, names)
    except Exception as exc:  # the store did not answer: this news is lost (the next will ask again)
        log.warning("notifications not sent: %s", exc)


async def _tell(s: Session, n: Notifier, pending: dict, names: list[MailboxEvent]) -> None:
    subscribed = await _subscribed(s, n)
    for event in names:
        old = n.renamed(event)
        if "MailboxName" not in n.events_for(event.mailbox, subscribed):
            continue
        if event.kind == "mailbox_deleted":
            s.write(list_line(s, "LIST", ["\\NonExistent"], event.mailbox))
        elif event.kind == "mailbox_renamed" and old is not None and old != event.mailbox:
            s.write(list_line(s, "LIST", [], event.mailbox, b' ("OLDNAME" (' + rsp.mailbox(old, s.rev2) + b"))"))
        else:
            s.write(list_line(s, "LIST", [], event.mailbox))
    for mailbox_id, (name, events) in pending.items():
        if s.view is not None and mailbox_id == s.view.mailbox_id:
            continue  # the selected mailbox speaks for itself
        if events & n.events_for(name, subscribed):
            await _status(s, name)


async def read(s: Session) -> bytes:
    """The session's next input, telling NOTIFY's news as it comes meanwhile (RFC 5465 §1: between
    commands, not only in IDLE). The session calls this only when nothing of a next command is in."""
    from mailflow_imap_pop3.imap.session import State

    incoming = asyncio.ensure_future(s.conn.read())
    try:
        while (n := s.notifier) is not None and s.state != State.LOGOUT:
            if n.wake.is_set():
                await deliver(s)
                await s.conn.flush()
                continue
            wake = asyncio.ensure_future(n.wake.wait())
            done, _ = await asyncio.wait({incoming, wake}, return_when=asyncio.FIRST_COMPLETED)
            if not wake.done():
                wake.cancel()
            if incoming in done:
                return incoming.result()
        return b"" if s.state == State.LOGOUT else await incoming
    finally:
        if not incoming.done():
            incoming.cancel()
