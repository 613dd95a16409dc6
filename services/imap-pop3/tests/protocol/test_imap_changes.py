"""Changing messages: STORE (+/-/replace, .SILENT, UNCHANGEDSINCE), EXPUNGE, UID EXPUNGE, COPY/MOVE with
COPYUID, CLOSE/UNSELECT, read-only EXAMINE; and what other sessions on the mailbox hear, and when:
EXISTS/FETCH at the end of any command, EXPUNGE never during FETCH, STORE or SEARCH."""

from __future__ import annotations

import imaplib
import re

from imaptest import Raw, make_message


def selected(srv, mailbox="INBOX", cmd="SELECT") -> Raw:
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.cmd("a0", "LOGIN alice@example.test alice-pw")
    assert c.cmd("s0", f"{cmd} {mailbox}")[-1].startswith(b"s0 OK")
    return c


def fill(srv, n):
    for i in range(n):
        srv.deliver("alice@example.test", make_message(f"m{i}"))


def test_store_forms(srv):
    fill(srv, 3)
    c = selected(srv)
    c.cmd("r", "FETCH 1:3 FLAGS")
    assert c.cmd("a1", "STORE 1:2 +FLAGS (\\Flagged $Work)")[:-1] == [
        b"* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $Work)",
        b"* OK [PERMANENTFLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $Work \\*)] Flags permitted",
        b"* 1 FETCH (FLAGS (\\Flagged $Work \\Recent))",
        b"* 2 FETCH (FLAGS (\\Flagged $Work \\Recent))",
    ]
    assert c.cmd("a2", "STORE 1 -FLAGS ($Work)")[0] == b"* 1 FETCH (FLAGS (\\Flagged \\Recent))"
    assert c.cmd("a3", "STORE 2 FLAGS (\\Seen)")[0] == b"* 2 FETCH (FLAGS (\\Seen \\Recent))"
    assert c.cmd("a4", "STORE 3 +FLAGS.SILENT (\\Answered)") == [b"a4 OK STORE completed"]
    assert c.cmd("a5", "UID STORE 3 -FLAGS \\Answered")[0] == b"* 3 FETCH (UID 3 FLAGS (\\Recent))"
    assert c.cmd("a6", "STORE 1 +FLAGS (\\Recent)")[-1].startswith(b"a6 BAD")
    assert c.cmd("a7", "STORE 9 +FLAGS (\\Seen)")[-1].startswith(b"a7 BAD Invalid message sequence number")


def test_unchangedsince(srv):
    fill(srv, 2)
    c = selected(srv)
    ms = [int(x) for x in re.findall(rb"MODSEQ \((\d+)\)", b"".join(c.cmd("a1", "FETCH 1:2 MODSEQ")))]
    c.cmd("a2", "STORE 2 +FLAGS.SILENT (\\Seen)")
    lines = c.cmd("a3", f"STORE 1:2 (UNCHANGEDSINCE {max(ms)}) +FLAGS (\\Flagged)")
    assert lines[-1] == b"a3 OK [MODIFIED 2] Conditional STORE failed for some messages"
    assert lines[0].startswith(b"* 1 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (")


def test_expunge_and_uid_expunge(srv):
    fill(srv, 5)
    c = selected(srv)
    c.cmd("a1", "STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    assert c.cmd("a2", "EXPUNGE") == [b"* 2 EXPUNGE", b"* 3 EXPUNGE", b"a2 OK EXPUNGE completed"]
    c.cmd("a3", "STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    assert c.cmd("a4", "UID EXPUNGE 3") == [b"* 2 EXPUNGE", b"a4 OK UID EXPUNGE completed"]
    assert c.cmd("a5", "UID SEARCH ALL")[0] == b"* SEARCH 1 5"
    c.cmd("a6", "CLOSE")  # expunges 1 (still \Deleted) silently
    c.cmd("a7", "SELECT INBOX")
    assert c.cmd("a8", "UID SEARCH ALL")[0] == b"* SEARCH 5"


def test_copy_move_copyuid(srv):
    fill(srv, 3)
    c = selected(srv)
    reply = c.cmd("a1", "COPY 1:2 Archive")[-1]
    assert re.fullmatch(rb"a1 OK \[COPYUID \d+ 1:2 1:2\] COPY completed", reply)
    lines = c.cmd("a2", "UID MOVE 2:3 Trash")
    assert re.fullmatch(rb"\* OK \[COPYUID \d+ 2:3 1:2\] Moved", lines[0])
    assert lines[1:] == [b"* 2 EXPUNGE", b"* 2 EXPUNGE", b"a2 OK UID MOVE completed"]
    assert c.cmd("a3", "COPY 1 Nowhere")[-1] == b"a3 NO [TRYCREATE] No such mailbox, create it first"
    assert c.cmd("a4", "MOVE 1 Junk")[1] == b"* 1 EXPUNGE"
    assert c.cmd("a5", "UID COPY 99 Archive")[-1].startswith(b"a5 OK")
    assert b"MESSAGES 2" in c.cmd("a6", "STATUS Archive (MESSAGES)")[0]


def test_examine_is_read_only(srv):
    fill(srv, 1)
    c = selected(srv, cmd="EXAMINE")
    assert c.cmd("a1", "STORE 1 +FLAGS (\\Seen)")[-1].startswith(b"a1 NO [READ-ONLY]")
    assert c.cmd("a2", "EXPUNGE")[-1].startswith(b"a2 NO [READ-ONLY]")
    assert c.cmd("a3", "MOVE 1 Trash")[-1].startswith(b"a3 NO [READ-ONLY]")
    assert c.cmd("a4", "COPY 1 Trash")[-1].startswith(b"a4 OK")


def test_unselect_and_close_leave_selected_state(srv):
    fill(srv, 1)
    c = selected(srv)
    c.cmd("a1", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    c.cmd("a2", "UNSELECT")  # no expunge
    assert c.cmd("a3", "FETCH 1 FLAGS")[-1].startswith(b"a3 NO [CLIENTBUG]")
    assert b"MESSAGES 1" in c.cmd("a4", "STATUS INBOX (MESSAGES)")[0]


def test_other_sessions_hear_of_changes_at_allowed_moments(srv):
    fill(srv, 3)
    a, b = selected(srv), selected(srv)
    srv.deliver("alice@example.test", make_message("new"))
    a.cmd("a1", "STORE 1 +FLAGS.SILENT (\\Seen)")
    lines = b.cmd("b1", "NOOP")
    assert b"* 4 EXISTS" in lines and b"* 1 FETCH (UID 1 FLAGS (\\Seen))" in lines
    a.cmd("a2", "STORE 2 +FLAGS.SILENT (\\Deleted)")
    a.cmd("a3", "EXPUNGE")
    # during FETCH, STORE and SEARCH b must not hear EXPUNGE: message 2 keeps its number
    lines = b.cmd("b2", "FETCH 2:3 UID")
    assert b"EXPUNGE" not in b"".join(lines) and lines[0].startswith(b"* 2 FETCH (")
    assert b"EXPUNGE" not in b"".join(b.cmd("b3", "SEARCH ALL"))
    assert b"EXPUNGE" not in b"".join(b.cmd("b4", "STORE 3 +FLAGS.SILENT (\\Flagged)"))
    assert (
        b.cmd("b5", "FETCH 2 BODY.PEEK[]")[-1]
        == b"b5 NO [EXPUNGEISSUED] Some of the requested messages no longer exist"
    )
    lines = b.cmd("b6", "NOOP")
    assert lines == [b"* 2 EXPUNGE", b"b6 OK NOOP completed"]
    assert b.cmd("b7", "UID SEARCH ALL")[0] == b"* SEARCH 1 3 4"
    # UID commands may say EXPUNGE
    a.cmd("a4", "UID STORE 3 +FLAGS.SILENT (\\Deleted)")
    a.cmd("a5", "UID EXPUNGE 3")
    assert b"* 2 EXPUNGE" in b.cmd("b8", "UID FETCH 1 FLAGS")


def test_imaplib_store_copy_expunge(srv):
    fill(srv, 4)
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    m.login("alice@example.test", "alice-pw")
    m.select("INBOX")
    assert m.store("1:2", "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert m.copy("3", "Archive")[0] == "OK"
    typ, data = m.expunge()
    assert data == [b"1", b"1"]
    typ, data = m.uid("SEARCH", None, "ALL")
    assert data == [b"3 4"]
    assert m.close()[0] == "OK"
    m.logout()


def test_append_to_the_selected_mailbox_announces_it(srv):
    fill(srv, 1)
    c = selected(srv)
    lines = c.cmd("a1", "APPEND INBOX {5+}\r\nhello")
    assert lines[:2] == [b"* 2 EXISTS", b"* 2 RECENT"] and lines[-1].startswith(b"a1 OK [APPENDUID ")
    lines = c.cmd("a2", "COPY 1 INBOX")
    assert lines[0] == b"* 3 EXISTS"


def test_copy_and_move_into_the_selected_mailbox_itself(srv):
    """RFC 3501 §6.4.7 and RFC 6851 put no rule against the selected mailbox as the destination: the
    copies get new UIDs (COPYUID) and come as EXISTS, \\Recent to this session; MOVE expunges the
    originals (EXPUNGE after the untagged COPYUID), and the flags travel with them."""
    fill(srv, 2)
    c = selected(srv)
    c.cmd("f0", "STORE 2 +FLAGS.SILENT (\\Flagged)")
    lines = c.cmd("a1", "COPY 1:2 INBOX")
    assert lines[:2] == [b"* 4 EXISTS", b"* 4 RECENT"]
    assert re.fullmatch(rb"a1 OK \[COPYUID \d+ 1:2 3:4\] COPY completed", lines[-1])
    lines = c.cmd("a2", "UID MOVE 2 INBOX")
    assert re.fullmatch(rb"\* OK \[COPYUID \d+ 2 5\] Moved", lines[0])
    assert lines[1:] == [b"* 2 EXPUNGE", b"* 4 EXISTS", b"* 4 RECENT", b"a2 OK UID MOVE completed"]
    assert c.cmd("a3", "UID FETCH 1:* FLAGS")[:-1] == [
        b"* 1 FETCH (UID 1 FLAGS (\\Recent))",
        b"* 2 FETCH (UID 3 FLAGS (\\Recent))",
        b"* 3 FETCH (UID 4 FLAGS (\\Flagged \\Recent))",
        b"* 4 FETCH (UID 5 FLAGS (\\Flagged \\Recent))",
    ]
    lines = c.cmd("a4", "MOVE 1:4 INBOX")  # all of them: the mailbox holds four new ones after
    assert re.fullmatch(rb"\* OK \[COPYUID \d+ 1,3:5 6:9\] Moved", lines[0])
    assert lines[1:5] == [b"* 1 EXPUNGE"] * 4 and lines[5:7] == [b"* 4 EXISTS", b"* 4 RECENT"]
    assert c.cmd("a5", "UID SEARCH ALL")[0] == b"* SEARCH 6 7 8 9"
    other = selected(srv)
    assert other.cmd("b1", "UID SEARCH ALL")[0] == b"* SEARCH 6 7 8 9"
    assert other.cmd("b2", "STATUS INBOX (MESSAGES UIDNEXT)")[0] == b'* STATUS "INBOX" (MESSAGES 4 UIDNEXT 10)'


def test_an_expired_store_session_ends_the_imap_session(srv):
    fill(srv, 1)
    c = selected(srv)
    srv.store.expire_sessions()
    srv.deliver("alice@example.test", make_message("after expiry"))
    lines = c.cmd("a1", "NOOP")
    assert lines[0] == b"* BYE Session expired, please log in again"
    assert c.closed()
    c = selected(srv)  # a new login works: the cached credentials were dropped, the store asked again
    assert b"* 2 EXISTS" in c.cmd("a2", "SELECT INBOX")


def test_noop_trusts_events_while_they_flow_and_still_asks_the_store_now_and_then(tmp_path, store, nats_url):
    """With NATS connected and the user's events subscribed, NOOP asks the store only when an event
    announced a change; an event that never comes costs at most `noop_store_check` seconds."""
    import time

    from imaptest import Running, settings_for

    srv = Running(settings_for(tmp_path, noop_store_check=0.5), store, nats_url=nats_url)
    try:
        c = selected(srv)
        assert c.cmd("a1", "NOOP") == [b"a1 OK NOOP completed"]  # asks the store: nothing new
        srv.deliver("alice@example.test", make_message("announced"))  # the store announces it
        assert c.cmd("a2", "NOOP")[0] == b"* 1 EXISTS"
        store.listeners.clear()  # from now on every event is lost
        srv.deliver("alice@example.test", make_message("unannounced"))
        assert c.cmd("a3", "NOOP") == [b"a3 OK NOOP completed"]  # nothing announced, asked just now
        time.sleep(0.6)
        assert c.cmd("a4", "NOOP")[0] == b"* 2 EXISTS"  # the periodic look finds it
    finally:
        srv.stop()


def _counting_changes(store) -> list[int]:
    """Count the store's `changes` calls from now on (the round trip an announced append saves)."""
    calls: list[int] = []
    real = store.changes

    async def changes(p, mailbox_id, since_modseq):
        calls.append(since_modseq)
        return await real(p, mailbox_id, since_modseq)

    store.changes = changes
    return calls


def test_announced_messages_are_shown_without_asking_the_store(tmp_path, store, nats_url):
    """An "appended" event that carries the new messages' flags and continues the view's MODSEQ is
    applied as it is: EXISTS, RECENT, new keywords in FLAGS, the flags in FETCH, all without asking the
    store for changes (only who has them \\Recent). Anything else — a flag change, an expunge, a gap
    in the MODSEQs — makes the session ask."""
    from imaptest import Running, settings_for

    srv = Running(settings_for(tmp_path, noop_store_check=30), store, nats_url=nats_url)
    try:
        fill(srv, 1)
        c, other = selected(srv), selected(srv)
        assert c.cmd("a1", "NOOP") == [b"a1 OK NOOP completed"]
        calls = _counting_changes(store)
        srv.deliver("alice@example.test", make_message("flagged"), flags=("\\Flagged", "$Label"))
        lines = c.cmd("a2", "NOOP")
        assert lines[:3] == [b"* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $Label)", b"* 2 EXISTS", b"* 2 RECENT"]
        srv.deliver("alice@example.test", make_message("two"))
        srv.deliver("alice@example.test", make_message("three"))
        assert c.cmd("a3", "NOOP")[:2] == [b"* 4 EXISTS", b"* 4 RECENT"]
        assert calls == []  # three messages, no store round trip
        fetched = c.cmd("a4", "FETCH 2:4 (UID FLAGS MODSEQ)")
        assert fetched[0].startswith(b"* 2 FETCH (UID 2 FLAGS (\\Flagged $Label \\Recent) MODSEQ (")
        ours = [int(x) for x in re.findall(rb"MODSEQ \((\d+)\)", b"".join(fetched))]
        other.cmd("o0", "NOOP")  # the other session asks the store
        theirs = [int(x) for x in re.findall(rb"MODSEQ \((\d+)\)", b"".join(other.cmd("o1", "FETCH 2:4 (MODSEQ)")))]
        assert ours == theirs and ours == sorted(ours)  # what the store itself says
        # another session changes a flag, then a message arrives: the flag event breaks the chain
        other.cmd("o2", "STORE 1 +FLAGS.SILENT (\\Seen)")
        srv.deliver("alice@example.test", make_message("after the flag"))
        n = len(calls)
        lines = c.cmd("a5", "NOOP")
        assert b"* 5 EXISTS" in lines and lines[0].startswith(b"* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent) MODSEQ (")
        assert len(calls) == n + 1
        # an expunge, then a delivery
        other.cmd("o3", "STORE 1 +FLAGS.SILENT (\\Deleted)")
        other.cmd("o4", "EXPUNGE")
        srv.deliver("alice@example.test", make_message("after the expunge"))
        n = len(calls)
        lines = c.cmd("a6", "NOOP")
        assert b"* 1 EXPUNGE" in lines and b"* 5 EXISTS" in lines
        assert len(calls) == n + 1
        # a gap: an event lost on the way (the listener is bypassed for one delivery)
        hub_dispatch = store.listeners.pop()
        srv.deliver("alice@example.test", make_message("unannounced"))
        store.listeners.append(hub_dispatch)
        srv.deliver("alice@example.test", make_message("announced after a gap"))
        n = len(calls)
        lines = c.cmd("a7", "NOOP")
        assert b"* 7 EXISTS" in lines and len(calls) == n + 1
        other.cmd("o5", "NOOP")
        assert c.cmd("a8", "UID SEARCH ALL")[0] == other.cmd("o6", "UID SEARCH ALL")[0] == b"* SEARCH 2 3 4 5 6 7 8"
    finally:
        srv.stop()


def test_idle_shows_an_announced_message_without_asking_the_store(tmp_path, store, nats_url):
    from imaptest import Running, settings_for

    srv = Running(settings_for(tmp_path), store, nats_url=nats_url)
    try:
        c = selected(srv)
        calls = _counting_changes(store)
        c.send("i1 IDLE")
        assert c.line().startswith(b"+")
        srv.deliver("alice@example.test", make_message("pushed"))
        assert c.line() == b"* 1 EXISTS"
        assert c.line() == b"* 1 RECENT"
        c.send("DONE")
        assert c.line() == b"i1 OK IDLE terminated"
        assert calls == []
    finally:
        srv.stop()
