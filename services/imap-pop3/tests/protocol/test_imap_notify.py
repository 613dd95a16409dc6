"""NOTIFY (RFC 5465): a session that set NOTIFY hears of deliveries and of other sessions' changes while it
sits between commands (no IDLE, no NOOP): STATUS for mailboxes not selected, EXISTS/FETCH/EXPUNGE for the
selected one, LIST for mailbox names; BADEVENT for what the event stream does not carry; NOTIFY NONE;
NOTIFICATIONOVERFLOW instead of an unbounded backlog; hostile NOTIFY SETs."""

from __future__ import annotations

import re

from imaptest import Raw, make_message

from mailflow.contracts.messages import MailboxEvent
from mailflow_imap_pop3.imap.commands import notify
from tests.support import wait_for


def session(srv, user="alice") -> Raw:
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.send(f"a0 LOGIN {user}@example.test {user}-pw")
    c.until("a0")
    return c


def status_re(name: str, messages: int) -> bytes:
    return rb'\* STATUS "%s" \(MESSAGES %d UIDNEXT \d+ UIDVALIDITY \d+ UNSEEN \d+\)' % (
        name.encode(),
        messages,
    )


def test_status_of_a_delivery_without_idle(srv):
    c = session(srv)
    c.send("a1 CAPABILITY")
    assert b" NOTIFY" in c.until("a1")[0]
    assert c.cmd("a2", "NOTIFY SET (MAILBOXES INBOX (MessageNew MessageExpunge))") == [
        b"a2 OK NOTIFY completed"
    ]
    srv.deliver("alice@example.test", make_message("news"))
    assert re.fullmatch(status_re("INBOX", 1), c.line())  # nothing sent by the client: no IDLE, no NOOP
    srv.deliver("alice@example.test", make_message("not watched"), mailbox="Archive")
    srv.deliver("bob@example.test", make_message("bob's", to="bob@example.test"))  # another user
    assert c.cmd("a3", "NOOP") == [b"a3 OK NOOP completed"]
    srv.deliver("alice@example.test", make_message("more"))
    assert re.fullmatch(status_re("INBOX", 2), c.line())
    user_id = next(iter(srv.server.ctx.sessions)).principal.user_id
    c.cmd("a4", "LOGOUT")
    wait_for(lambda: srv.server.ctx.hub.watching(user_id) == 0, what="the ended session no longer watches")


def test_selected_mailbox_and_another_sessions_changes(srv):
    srv.deliver("alice@example.test", make_message("old"))
    c = session(srv)
    c.cmd("s1", "SELECT INBOX")
    assert c.cmd(
        "a1",
        "NOTIFY SET (SELECTED (MessageNew (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)]) MessageExpunge FlagChange))"
        " (PERSONAL (MessageNew MessageExpunge))",
    ) == [b"a1 OK NOTIFY completed"]
    srv.deliver("alice@example.test", make_message("fresh"))
    assert c.line() == b"* 2 EXISTS"
    assert c.line() == b"* 2 RECENT"
    assert c.line() == b"* 2 FETCH (UID 2 BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: fresh\r\n\r\n)"
    other = session(srv)
    other.cmd("b1", "APPEND Archive {5+}\r\nHello")
    assert re.fullmatch(status_re("Archive", 1), c.line())
    other.cmd("b2", "SELECT INBOX")
    other.cmd("b3", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert c.line() == b"* 1 FETCH (UID 1 FLAGS (\\Deleted \\Recent))"
    other.cmd("b4", "EXPUNGE")
    assert c.line() == b"* 1 EXPUNGE"  # SELECTED: at once, between commands
    assert c.cmd("a2", "FETCH 1 (UID)") == [b"* 1 FETCH (UID 2)", b"a2 OK FETCH completed"]


def test_selected_delayed_keeps_expunges_for_a_command(srv):
    srv.deliver("alice@example.test", make_message("one"))
    srv.deliver("alice@example.test", make_message("two"))
    c = session(srv)
    c.cmd("s1", "SELECT INBOX")
    c.cmd("a1", "NOTIFY SET (SELECTED-DELAYED (MessageNew MessageExpunge))")
    other = session(srv)
    other.cmd("b1", "SELECT INBOX")
    other.cmd("b2", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.cmd("b3", "EXPUNGE")
    srv.deliver("alice@example.test", make_message("three"))
    assert c.line() == b"* 3 EXISTS"  # the new message at once, the expunge not yet
    assert c.line() == b"* 3 RECENT"
    assert c.cmd("a2", "FETCH 1:* (UID)") == [
        b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 2)", b"* 3 FETCH (UID 3)", b"a2 OK FETCH completed"
    ]  # fmt: skip
    assert c.cmd("a3", "NOOP") == [b"* 1 EXPUNGE", b"a3 OK NOOP completed"]


def test_mailbox_names(srv):
    c = session(srv)
    c.cmd("a1", "NOTIFY SET (PERSONAL (MailboxName))")
    other = session(srv)
    other.cmd("b1", "CREATE Work")
    assert c.line() == b'* LIST () "/" "Work"'
    other.cmd("b2", "RENAME Work Play")
    assert c.line() == b'* LIST () "/" "Play" ("OLDNAME" ("Work"))'
    other.cmd("b3", "DELETE Play")
    assert c.line() == b'* LIST (\\NonExistent) "/" "Play"'


def test_set_status_and_subscribed_and_mailboxes(srv):
    srv.deliver("alice@example.test", make_message("a"), mailbox="Archive")
    c = session(srv)
    c.cmd("p1", "UNSUBSCRIBE Trash")  # a new user is subscribed to all its mailboxes
    c.cmd("p2", "UNSUBSCRIBE Junk")
    lines = c.cmd(
        "a1",
        'NOTIFY SET STATUS (SUBSCRIBED (MessageNew MessageExpunge)) (MAILBOXES ("Junk") (MessageNew MessageExpunge))',
    )
    names = [re.match(rb'\* STATUS "([^"]+)"', line).group(1) for line in lines[:-1]]
    assert sorted(names) == [b"Archive", b"Drafts", b"INBOX", b"Junk", b"Sent"]  # not Trash
    assert any(re.fullmatch(status_re("Archive", 1), line) for line in lines)
    assert lines[-1] == b"a1 OK NOTIFY completed"
    srv.deliver("alice@example.test", make_message("t"), mailbox="Trash")  # neither subscribed nor named
    assert c.cmd("a2", "NOOP") == [b"a2 OK NOOP completed"]
    srv.deliver("alice@example.test", make_message("j"), mailbox="Junk")
    assert re.fullmatch(status_re("Junk", 1), c.line())


def test_notify_in_idle(srv):
    c = session(srv)
    c.cmd("s1", "SELECT INBOX")
    c.cmd("a1", "NOTIFY SET (SELECTED (MessageNew MessageExpunge)) (PERSONAL (MessageNew MessageExpunge))")
    c.send("i1 IDLE")
    assert c.line().startswith(b"+ ")
    srv.deliver("alice@example.test", make_message("d"), mailbox="Drafts")
    assert re.fullmatch(status_re("Drafts", 1), c.line())
    srv.deliver("alice@example.test", make_message("i"))
    assert c.line() == b"* 1 EXISTS"
    c.send("DONE")
    assert c.until("i1")[-1] == b"i1 OK IDLE terminated"


def test_notify_none_and_badevent(srv):
    c = session(srv)
    c.cmd("a1", "NOTIFY SET (INBOXES (MessageNew MessageExpunge))")
    assert c.cmd("a2", "NOTIFY SET (PERSONAL (MessageNew MessageExpunge SubscriptionChange))") == [
        b"a2 NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName)] Event not supported"
    ]
    assert c.cmd("a3", "NOTIFY SET (PERSONAL (AnnotationChange MessageNew MessageExpunge))")[-1].startswith(
        b"a3 NO [BADEVENT"
    )
    assert c.cmd("a4", "NOTIFY SET (PERSONAL (NoSuchEvent))")[-1].startswith(b"a4 NO [BADEVENT")
    srv.deliver("alice@example.test", make_message("still on"))  # the failed SETs left the first in place
    assert re.fullmatch(status_re("INBOX", 1), c.line())
    assert c.cmd("a5", "NOTIFY NONE") == [b"a5 OK NOTIFY completed"]
    srv.deliver("alice@example.test", make_message("unheard"))
    assert c.cmd("a6", "NOOP") == [b"a6 OK NOOP completed"]


def test_overflow_ends_notify(srv):
    c = session(srv)
    c.cmd("a1", "NOTIFY SET (PERSONAL (MessageNew MessageExpunge))")
    sess = next(x for x in list(srv.server.ctx.sessions) if getattr(x, "notifier", None) is not None)
    user_id, hub = sess.principal.user_id, srv.server.ctx.hub
    burst = [
        MailboxEvent(user_id=user_id, mailbox_id=10_000 + i, mailbox=f"Box{i}", kind="appended", uids=[1])
        for i in range(notify.MAX_PENDING + 1)
    ]
    srv.loop.call_soon_threadsafe(lambda: [hub.dispatch(e) for e in burst])  # faster than it can be told
    assert c.line() == b"* OK [NOTIFICATIONOVERFLOW] Too many notifications: NOTIFY is off"
    assert sess.notifier is None
    srv.deliver("alice@example.test", make_message("after"))
    assert c.cmd("a2", "NOOP") == [b"a2 OK NOOP completed"]


def test_hostile_notify_set(srv):
    c = session(srv)
    for n, (args, reply) in enumerate([
        ("(PERSONAL (MessageNew))", b"BAD MessageNew and MessageExpunge go together"),
        ("(PERSONAL (FlagChange))", b"BAD FlagChange needs MessageNew and MessageExpunge"),
        ("(PERSONAL (MessageNew (UID) MessageExpunge))", b"BAD MessageNew fetch attributes only for the selected"),
        ("(SELECTED (MessageNew (BODY[]) MessageExpunge))", b"BAD MessageNew fetch attributes must not set"),
        ("(SELECTED (MessageNew (" + " ".join(["UID"] * 17) + ") MessageExpunge))", b"BAD Too many MessageNew"),
        (" ".join(["(PERSONAL NONE)"] * 17), b"BAD Too many NOTIFY event groups"),
        ("(EVERYWHERE (MessageNew MessageExpunge))", b"BAD Unknown NOTIFY mailbox filter"),
        ("(SELECTED (MessageNew MessageExpunge MailboxName))", b"BAD SELECTED takes message events only"),
        ("(SELECTED NONE) (SELECTED-DELAYED NONE)", b"BAD One of SELECTED and SELECTED-DELAYED"),
        ("(MAILBOXES (" + " ".join(["x"] * 1001) + ") NONE)", b"BAD Too many items in a list"),
        ("(PERSONAL ())", b"BAD Syntax error"),
        ("", b"BAD Syntax error"),
    ]):  # fmt: skip
        assert c.cmd(f"h{n}", f"NOTIFY SET {args}".rstrip())[-1].startswith(f"h{n} ".encode() + reply), args
    # several groups naming one mailbox: it gets what they ask for together (RFC 5465 §6)
    assert c.cmd(
        "z1",
        "NOTIFY SET (SUBTREE INBOX NONE) (MAILBOXES INBOX (MailboxName)) (PERSONAL (MessageNew MessageExpunge))",
    ) == [b"z1 OK NOTIFY completed"]
    srv.deliver("alice@example.test", make_message("told"))
    assert re.fullmatch(status_re("INBOX", 1), c.line())


def test_notify_set_is_an_implicit_noop(srv, store):
    c = session(srv)
    c.cmd("s1", "SELECT INBOX")
    store.listeners.remove(srv.listener)  # this delivery's event is lost on the way
    srv.deliver("alice@example.test", make_message("unannounced"))
    store.listeners.append(srv.listener)
    assert c.cmd("a1", "NOTIFY SET (SELECTED (MessageNew MessageExpunge))") == [
        b"* 1 EXISTS", b"* 1 RECENT", b"a1 OK NOTIFY completed"
    ]  # fmt: skip


def test_selecting_and_closing_mailboxes_keeps_notify_on(srv):
    c = session(srv)
    c.cmd("a1", "NOTIFY SET (PERSONAL (MessageNew MessageExpunge))")
    c.cmd("a2", "SELECT Archive")
    c.cmd("a3", "UNSELECT")  # the session stops watching for the selected mailbox, not for NOTIFY
    c.cmd("a4", "EXAMINE Nowhere")  # a failed SELECT neither
    srv.deliver("alice@example.test", make_message("still"))
    assert re.fullmatch(status_re("INBOX", 1), c.line())
    c.cmd("a5", "SELECT INBOX")
    assert c.cmd("a6", "NOTIFY NONE") == [b"a6 OK NOTIFY completed"]  # the selected mailbox is still watched
    srv.deliver("alice@example.test", make_message("at the next command"))
    assert c.cmd("a7", "NOOP") == [b"* 2 EXISTS", b"* 2 RECENT", b"a7 OK NOOP completed"]
    c.cmd("a8", "CLOSE")
    assert srv.server.ctx.hub.watching(next(iter(srv.server.ctx.sessions)).principal.user_id) == 0
