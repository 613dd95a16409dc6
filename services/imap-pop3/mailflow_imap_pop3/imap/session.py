"""One IMAP connection: the states of RFC 3501 §3, the command table, and the read-parse-run loop.

The loop frames input (framing.Framer), answers "+" to synchronizing literals, parses each command,
checks the table (`COMMANDS`: handler and the states it runs in), runs the handler, then, when the
command allows it, tells the client what changed in the selected mailbox meanwhile, and finally writes
the tagged reply. Every exception of a handler becomes a reply in `errors.to_reply`; the connection
is only dropped for LOGOUT, a fatal framing error (an oversized LITERAL+), too many BADs in a row,
the autologout timer, the service's drain, a revocation of the user's credentials (revoke.py; a
store call refused with 401 too), or an eviction (the service is full and this session, not logged
in, waits for the client) — `* BYE` first whenever the client can still read it.
The autologout timer is the slowloris rule of mailflow.connections.InputDeadline: a command, with its
literals, must be in within `preauth_timeout` (logged in: `idle_timeout`) of the reply before it, plus
a second per `min_input_rate` octets; before login the session lasts at most `login_timeout`.
Output is collected and flushed once per batch of pipelined commands.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailflow import ids
from mailflow import log as mlog
from mailflow.connections import InputDeadline
from mailflow.contracts.messages import MailboxEvent
from mailflow.errors import NotFound
from mailflow.store.api import Changes, Principal
from mailflow.store.client import SessionExpired
from mailflow.store.search import All
from mailflow_imap_pop3 import metrics
from mailflow_imap_pop3.context import Context, session_id
from mailflow_imap_pop3.imap import errors
from mailflow_imap_pop3.imap import responses as rsp
from mailflow_imap_pop3.imap.commands import (
    auth,
    context,
    fetch,
    idle,
    mailbox,
    notify,
    quota,
    search,
    selected,
    sort,
    store,
)
from mailflow_imap_pop3.imap.framing import Continue, FrameError, Framer
from mailflow_imap_pop3.imap.lexer import ParseError
from mailflow_imap_pop3.imap.parser import parse
from mailflow_imap_pop3.imap.responses import Reply
from mailflow_imap_pop3.imap.syntax import Command
from mailflow_imap_pop3.imap.view import MailboxView
from mailflow_imap_pop3.listener import Connection
from mailflow_imap_pop3.stream_session import StreamSession

log = logging.getLogger(__name__)

# A mailbox name that is not modified UTF-7 is NO before the handler runs, except for these: a failed
# SELECT/EXAMINE closes the selected mailbox first (RFC 3501 §6.3.1), which mailbox._open does.
_OPENS = frozenset({"SELECT", "EXAMINE"})


class State(enum.Flag):
    NOT_AUTH = enum.auto()
    AUTH = enum.auto()
    SELECTED = enum.auto()
    LOGOUT = enum.auto()


ANY = State.NOT_AUTH | State.AUTH | State.SELECTED
AUTHED = State.AUTH | State.SELECTED

Handler = Callable[["Session", Command], Awaitable[Reply | None]]


@dataclass(frozen=True, slots=True)
class Spec:
    handler: Handler
    states: State
    expunge: bool = True  # untagged EXPUNGE may be sent at its end (not after FETCH/STORE/SEARCH, §7.4.1)
    poll: bool = False  # ask the store for changes even without an event (NOOP, CHECK)
    allowed: frozenset = frozenset()  # the states one by one: a set lookup is cheaper than Flag's `in`

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", frozenset(st for st in State if st in self.states))


COMMANDS: dict[str, Spec] = {
    "CAPABILITY": Spec(auth.cmd_capability, ANY),
    "NOOP": Spec(auth.cmd_noop, ANY, poll=True),
    "LOGOUT": Spec(auth.cmd_logout, ANY),
    "ID": Spec(auth.cmd_id, ANY),
    "STARTTLS": Spec(auth.cmd_starttls, State.NOT_AUTH),
    "AUTHENTICATE": Spec(auth.cmd_authenticate, State.NOT_AUTH),
    "LOGIN": Spec(auth.cmd_login, State.NOT_AUTH),
    "ENABLE": Spec(auth.cmd_enable, State.AUTH),
    "COMPRESS": Spec(auth.cmd_compress, AUTHED),
    "NAMESPACE": Spec(auth.cmd_namespace, AUTHED),
    "SELECT": Spec(mailbox.cmd_select, AUTHED),
    "EXAMINE": Spec(mailbox.cmd_examine, AUTHED),
    "CREATE": Spec(mailbox.cmd_create, AUTHED),
    "DELETE": Spec(mailbox.cmd_delete, AUTHED),
    "RENAME": Spec(mailbox.cmd_rename, AUTHED),
    "SUBSCRIBE": Spec(mailbox.cmd_subscribe, AUTHED),
    "UNSUBSCRIBE": Spec(mailbox.cmd_unsubscribe, AUTHED),
    "LIST": Spec(mailbox.cmd_list, AUTHED),
    "LSUB": Spec(mailbox.cmd_lsub, AUTHED),
    "STATUS": Spec(mailbox.cmd_status, AUTHED),
    "GETQUOTA": Spec(quota.cmd_getquota, AUTHED),
    "GETQUOTAROOT": Spec(quota.cmd_getquotaroot, AUTHED),
    "APPEND": Spec(mailbox.cmd_append, AUTHED),
    "IDLE": Spec(idle.cmd_idle, AUTHED),
    "NOTIFY": Spec(notify.cmd_notify, AUTHED, poll=True),  # RFC 5465 §3.1: SET is an implicit NOOP
    "CHECK": Spec(selected.cmd_check, State.SELECTED, poll=True),
    "CLOSE": Spec(selected.cmd_close, State.SELECTED),
    "UNSELECT": Spec(selected.cmd_unselect, State.SELECTED),
    "EXPUNGE": Spec(selected.cmd_expunge, State.SELECTED),
    "UID EXPUNGE": Spec(selected.cmd_uid_expunge, State.SELECTED),
    "COPY": Spec(selected.cmd_copy, State.SELECTED),
    "UID COPY": Spec(selected.cmd_uid_copy, State.SELECTED),
    "MOVE": Spec(selected.cmd_move, State.SELECTED),
    "UID MOVE": Spec(selected.cmd_uid_move, State.SELECTED),
    "SEARCH": Spec(search.cmd_search, State.SELECTED, expunge=False),
    "UID SEARCH": Spec(search.cmd_uid_search, State.SELECTED),
    "SORT": Spec(sort.cmd_sort, State.SELECTED, expunge=False),
    "UID SORT": Spec(sort.cmd_uid_sort, State.SELECTED),
    "THREAD": Spec(sort.cmd_thread, State.SELECTED, expunge=False),
    "UID THREAD": Spec(sort.cmd_uid_thread, State.SELECTED),
    "CANCELUPDATE": Spec(context.cmd_cancelupdate, State.SELECTED, expunge=False),
    "FETCH": Spec(fetch.cmd_fetch, State.SELECTED, expunge=False),
    "UID FETCH": Spec(fetch.cmd_uid_fetch, State.SELECTED),
    "STORE": Spec(store.cmd_store, State.SELECTED, expunge=False),
    "UID STORE": Spec(store.cmd_uid_store, State.SELECTED),
}
_STATE_HINT = {
    State.NOT_AUTH: "log in first",
    State.AUTH: "no mailbox selected",
    State.SELECTED: "not allowed with a mailbox selected",
}

_COMMANDS = metrics.CommandMetrics("imap")
_CAPABILITIES: dict[tuple, str] = {}  # Session.capabilities: (logged in, then what the list depends on) -> it
_SESSIONS_TLS = metrics.SESSIONS.labels("imap", "tls")
_SESSIONS_PLAIN = metrics.SESSIONS.labels("imap", "plain")
_ACTIVE = metrics.SESSIONS_ACTIVE.labels("imap")


class Session(StreamSession):
    NOT_AUTH, LOGOUT, BYE_EVICTED, protocol = State.NOT_AUTH, State.LOGOUT, rsp.BYE_EVICTED, "imap"

    def __init__(self, conn: Connection, ctx: Context):
        super().__init__()
        s = ctx.settings
        self.conn, self.ctx, self.store = conn, ctx, ctx.store
        self.id = session_id("i")
        self.state = State.NOT_AUTH
        self.principal: Principal | None = None
        self.view: MailboxView | None = None
        self.notifier: notify.Notifier | None = None  # NOTIFY SET (RFC 5465)
        self.framer = Framer(s.preauth_max_line_bytes, s.preauth_max_literal_bytes, None)
        self.enabled: set[str] = set()
        self.condstore = False
        # ENABLE IMAP4rev2 (RFC 9051): this session's names are UTF-8, it has no \Recent, SEARCH answers
        # ESEARCH; every other session, of this user too, keeps IMAP4rev1's behaviour.
        self.rev2 = False
        self.qresync = False  # ENABLE QRESYNC: VANISHED instead of EXPUNGE, SELECT (QRESYNC ...)
        self.idling = False
        # self.stopping (StreamSession): the drain or a revocation, BYE with `self.bye` as soon as we can
        self.wake = asyncio.Event()  # an event for the selected mailbox, the drain, a revocation
        self.client_id: str | None = None

    # --- what handlers use ----------------------------------------------------------------------------

    def untagged(self, text: str) -> None:
        self.conn.write(rsp.untagged(text))

    def capabilities(self) -> str:
        """What this session may use now. Computed at every login, so the strings are kept per the facts
        they depend on (`_CAPABILITIES`, a handful of keys per process); the key costs no more than a
        lookup (the SASL mechanisms are asked for only before login, where they matter)."""
        s = self.ctx.settings
        if self.state == State.NOT_AUTH:
            plain = self.plaintext_allowed()
            key = (False, not self.tls_active and self.ctx.tls is not None, plain,
                   tuple(self.mechanisms()) if plain else ())  # fmt: skip
        else:
            key = (True, self.conn.compressed, s.max_append_bytes)
        caps = _CAPABILITIES.get(key)
        if caps is None:
            caps = _CAPABILITIES[key] = self._capabilities()
        return caps

    def _capabilities(self) -> str:
        caps = ["IMAP4rev1", "IMAP4rev2", "SASL-IR", "ID", "ENABLE", "IDLE", "LITERAL+"]
        if self.state == State.NOT_AUTH:
            if not self.tls_active and self.ctx.tls is not None:
                caps.append("STARTTLS")
            if self.plaintext_allowed():
                caps += [f"AUTH={m}" for m in self.mechanisms()]
            else:
                caps.append("LOGINDISABLED")
        else:
            caps += [
                "NAMESPACE", "UIDPLUS", "MOVE", "UNSELECT", "CHILDREN", "SPECIAL-USE", "CREATE-SPECIAL-USE",
                "LIST-EXTENDED", "LIST-STATUS", "CONDSTORE", "QRESYNC", "STATUS=SIZE", "QUOTA", "QUOTA=RES-STORAGE", "BINARY", "MULTIAPPEND", "OBJECTID",
                "ESEARCH", "SEARCHRES", "SAVEDATE", "CATENATE", "NOTIFY", "PARTIAL", "SORT", "SORT=DISPLAY", "ESORT",
                "CONTEXT=SEARCH", "CONTEXT=SORT",
                "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES",
                f"APPENDLIMIT={self.ctx.settings.max_append_bytes}",
            ]  # fmt: skip
            if not self.conn.compressed:  # RFC 4978 §3: not offered again once on
                caps.append("COMPRESS=DEFLATE")
        return " ".join(caps)

    async def logged_in(self, principal: Principal) -> None:
        self.state = State.AUTH
        s = self.ctx.settings
        self.framer.limit(s.max_line_bytes, s.max_literal_bytes, s.max_append_bytes)
        self.authenticated(principal, s.idle_timeout)

    async def select(self, view: MailboxView) -> None:
        self.view = view
        self.state = State.SELECTED

    def drop_view(self) -> None:
        """Forget the selected mailbox, still watching the user (another SELECT follows)."""
        self.view = None
        if self.state == State.SELECTED:
            self.state = State.AUTH

    async def deselect(self) -> None:
        if self.view is not None:
            await self.unwatch()
        self.drop_view()

    async def watch(self) -> None:
        if self.principal is not None:
            await self.ctx.hub.watch(self.principal.user_id, self.on_event)

    async def unwatch(self) -> None:
        if self.principal is not None and self.notifier is None:  # NOTIFY watches all the user's mailboxes
            await self.ctx.hub.unwatch(self.principal.user_id, self.on_event)

    async def set_notifier(self, n: notify.Notifier | None) -> None:
        """NOTIFY SET (the user's events are watched from now on) or NOTIFY NONE."""
        old, self.notifier = self.notifier, n
        if n is not None and old is None:
            await self.watch()
        elif n is None and old is not None and self.view is None:
            await self.unwatch()

    def targets(self, seqset, uid: bool) -> list[int]:
        """Indexes into the view of the messages a sequence set names (BAD for a number out of range)."""
        view = self.view
        assert view is not None
        if seqset.saved:  # "$" (RFC 5182): the same messages in UID and sequence-number commands
            return view.by_saved()
        if uid:
            return view.by_uid(seqset)
        if not view.uids and all(0 in r for r in seqset.ranges):
            return []  # "1:*" in an empty mailbox names nothing, and that is no error
        try:
            return view.by_seq(seqset)
        except ValueError as exc:
            raise errors.bad(f"Invalid message sequence number: {exc}") from None

    def on_event(self, event: MailboxEvent) -> None:
        view, n = self.view, self.notifier
        if view is not None and event.mailbox_id == view.mailbox_id:
            if not view.dirty:
                view.event_at = time.perf_counter()
            view.announce(event)
            self.wake.set()
            if n is not None and n.selected_wants(event.kind):
                n.wake.set()
        elif n is not None and n.add(event):
            n.wake.set()
            self.wake.set()  # IDLE tells it too

    def quiet(self, view: MailboxView) -> bool:
        """No event since we last asked the store, none can have been missed, and that was recently:
        the store would answer "no changes" (a polling client costs no store round trip)."""
        return (
            time.monotonic() - view.asked_at < self.ctx.settings.noop_store_check
            and self.ctx.hub.heard_all(self.principal.user_id, view.asked_epoch)
        )

    async def sync(self, allow_expunge: bool, poll: bool = False) -> None:
        """Send the untagged responses for what changed in the selected mailbox since we last looked."""
        view = self.view
        if view is None or self.principal is None:
            return
        if not (view.dirty or (poll and not self.quiet(view))):
            if allow_expunge and view.pending_expunge:
                for line in view.remove(list(view.pending_expunge)):
                    self.write(line)
            if self.condstore and (note := view.held_note()):
                self.write(note)
            await context.update(self)
            return
        announced = view.announced_changes() if view.dirty and (not poll or self.quiet(view)) else None
        view.dirty, view.announced = False, []
        asked_at, asked_epoch = time.monotonic(), self.ctx.hub.epoch()
        try:  # new messages the events described in full need no `changes` call
            changes = announced
            if changes is None:
                changes = await self.store.changes(self.principal, view.mailbox_id, view.highestmodseq)
                if not changes.expunged_complete:
                    changes.expunged = await self.absent(view)
            recent_from = await self.recent_from(view, changes)
        except NotFound:
            self.write(rsp.untagged("BYE Selected mailbox was deleted, have to disconnect"))
            self.state = State.LOGOUT
            return
        except SessionExpired:
            self.ctx.auth.cache.forget(self.principal)
            self.write(rsp.untagged(f"BYE {errors.R_EXPIRED.text}"))
            self.state = State.LOGOUT
            return
        except Exception as exc:  # not this command's fault: look again at the next chance
            view.look_again()
            log.warning("changes of the selected mailbox unavailable: %s", exc)
            return
        if announced is None:
            view.asked_at, view.asked_epoch = asked_at, asked_epoch
        self.tell(view, view.apply(changes, allow_expunge, self.condstore, recent_from))
        if self.condstore and (note := view.held_note()):
            self.write(note)
        await context.update(self)  # RFC 5267 §4: after the EXISTS/EXPUNGE/FETCH that explain it

    async def absent(self, view: MailboxView) -> list[int]:
        """The view's UIDs the store no longer has: what `changes` cannot list when the store pruned the
        tombstones since the view's MODSEQ (rare: a session that slept through `expunged_keep` expunges).
        One search for the UIDs still there (UIDs only, whatever the mailbox's size)."""
        there = set(await self.store.search(self.principal, view.mailbox_id, All()))
        return [u for u in view.uids if u not in there]

    async def recent_from(self, view: MailboxView, ch: Changes) -> int | None:
        """From which UID the new messages in `ch` are \\Recent to this session: the store decides, so
        that one session of all (on every replica) has each (RFC 3501 §2.3.2). One store call when there
        are new messages, none otherwise; its errors are those of `changes` (new messages wait for the
        next look rather than be shown without knowing their \\Recent)."""
        top = view.new_top(ch)
        if not top or view.rev2:  # IMAP4rev2 has no \Recent: nothing to claim, no store call
            return None
        return await self.store.claim_recent(self.principal, view.mailbox_id, top + 1, not view.readonly)

    def tell(self, view: MailboxView, lines: list[bytes]) -> None:
        for line in lines:
            self.write(line)
        if view.event_at is not None and self.idling:
            metrics.PUSH_SECONDS.observe(time.perf_counter() - view.event_at)
        view.event_at = None

    # --- the loop ---------------------------------------------------------------------------------------

    async def read_line(self) -> bytes | None:
        """One raw line from the client (an AUTHENTICATE response); None at EOF or timeout."""
        while True:
            try:
                line = self.framer.next_line()
            except ValueError:
                return None
            if line is not None:
                return line
            if not await self.read_more():
                return None

    async def run(self) -> None:
        (_SESSIONS_TLS if self.conn.tls else _SESSIONS_PLAIN).inc()
        _ACTIVE.inc()
        self.ctx.sessions.add(self)
        s = self.ctx.settings
        self.timer = InputDeadline(
            s.preauth_timeout, s.min_input_rate, self._autologout,
            lambda: (self.busy and not self.reading) or self.idling, s.login_timeout,
        )  # fmt: skip
        if self.conn.slot is not None:
            self.conn.slot.evict = self.evict
        try:
            with mlog.context(session=self.id, peer=self.conn.ip):
                self.write(rsp.untagged(f"OK [CAPABILITY {self.capabilities()}] Mailflow IMAP4rev1 ready"))
                await self._loop()
        finally:
            self.timer.cancel()
            self.ctx.sessions.discard(self)
            _ACTIVE.dec()
            if self.principal is not None:
                log.info("logout", extra={"user": self.principal.address, "session": self.id,
                                          "seconds": round(time.monotonic() - self.started, 3)})  # fmt: skip
            try:
                notifying, self.notifier = self.notifier is not None, None
                await self.deselect()
                if notifying:
                    await self.unwatch()
            except Exception:
                log.debug("deselect at the end failed", exc_info=True)
            self.conn.close()

    def bye_line(self, text: str) -> bytes:
        return rsp.untagged(f"BYE {text}")

    async def receive(self) -> bytes:
        if self.notifier is not None and not self.busy and self.framer.between_commands:
            return await notify.read(self)  # NOTIFY's news told while the client is between commands
        return await self.conn.read()

    async def _loop(self) -> None:
        while self.state != State.LOGOUT:
            item = self.framer.next()
            if item is None:
                if not await self.read_more():
                    break
                continue
            if isinstance(item, Continue):
                self.write(rsp.continuation("Ready for literal data"))
                await self.conn.flush()
                self.timer.begin()
                continue
            if isinstance(item, FrameError):
                self.write(rsp.tagged(item.tag, item.status, item.text))
                if item.fatal:
                    self.write(rsp.untagged("BYE A literal was sent that cannot be taken, closing the connection"))
                    break
                if self._count_bad():
                    break
                continue
            self.busy = True
            try:
                await self.execute(item)
            finally:
                self.busy = False
                self.timer.begin()
            if self.stopping and self.state != State.LOGOUT:
                self.write(rsp.untagged(f"BYE {self.bye}"))
                break
        try:
            await self.conn.flush()
        except (ConnectionError, OSError):
            pass

    async def execute(self, data: bytes) -> None:
        started = time.perf_counter()
        try:
            cmd = parse(data, self.rev2)
        except ParseError as exc:
            self._transcript(data, None)
            self.write(Reply(exc.status, exc.text, exc.code).line(exc.tag))
            if exc.status == "BAD" and self._count_bad():
                self.state = State.LOGOUT
            _COMMANDS.observe("unknown" if exc.text.startswith("Unknown command") else "syntax", exc.status.lower(),
                     time.perf_counter() - started)  # fmt: skip
            return
        self._transcript(data, cmd)
        spec = COMMANDS[cmd.name]
        if self.state not in spec.allowed:
            hint = _STATE_HINT.get(self.state, "not allowed now")
            reply = Reply("NO", f"{cmd.name} not allowed now: {hint}", "CLIENTBUG")
        else:
            try:
                if cmd.invalid_name is not None and cmd.name not in _OPENS:
                    raise errors.no(*cmd.invalid_name)
                reply = await spec.handler(self, cmd) or Reply("OK", f"{cmd.name} completed")
                if reply is rsp.ANSWERED:  # the handler wrote its own tagged reply (STARTTLS)
                    _COMMANDS.observe(cmd.name, "ok", time.perf_counter() - started)
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reply = errors.to_reply(exc, ids.ref())
                if reply is errors.R_EXPIRED and self.principal is not None:
                    self.ctx.auth.cache.forget(self.principal)
            if self.state == State.SELECTED and reply.status != "BYE":
                await self.sync(spec.expunge, spec.poll)
        if reply.status == "BYE":
            self.write(rsp.untagged(f"BYE {reply.text}"))
            self.state = State.LOGOUT
        else:
            self.write(reply.line(cmd.tag))
        if reply.status == "BAD":
            if self._count_bad():
                self.state = State.LOGOUT
        else:
            self.bad_in_a_row = 0
        _COMMANDS.observe(cmd.name, reply.status.lower(), time.perf_counter() - started)

    def _transcript(self, data: bytes, cmd: Command | None) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        if cmd is not None and cmd.name in ("LOGIN", "AUTHENTICATE"):
            text = f"{cmd.tag} {cmd.name} ****"
        else:
            text = data[:200].decode("utf-8", "replace")
        log.debug("C: %s", text)

    # --- the end: drain, revocation ---------------------------------------------------------------------

    def end(self, text: str) -> None:
        """BYE now if we wait for the client (IDLE is woken to say it), else after the running command."""
        if self.stopping:
            return
        self.stopping, self.bye = True, text
        self.wake.set()
        if not self.busy and not self.idling:
            self.conn.send_now(rsp.untagged(f"BYE {text}"))
            self.conn.close()

    def shutdown(self) -> None:
        """The service is stopping."""
        self.end("Server shutting down, please reconnect")

    def revoke(self) -> None:
        """The user's password changed, or it was disabled or deleted: this session ends now."""
        if self.principal is not None:
            self.ctx.auth.cache.forget(self.principal)
        self.end(errors.R_REVOKED.text)
