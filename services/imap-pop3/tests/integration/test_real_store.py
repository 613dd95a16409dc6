"""imap-pop3 over the real mailbox-store (a process, on SQLite and on PostgreSQL) and a real nats-server:
IMAP and POP3 through StoreClient, and push: a delivery shows up in an IDLE session within a second."""

from __future__ import annotations

import imaplib
import poplib
import time

import pytest
from imaptest import Raw, make_message


def test_imap_over_the_real_store(srv):
    raw = make_message("over the store", body="Hello through REST.\n")
    srv.deliver("alice@example.test", raw)
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    m.login("alice@example.test", "alice-pw")
    typ, data = m.select("INBOX")
    assert data == [b"1"]
    typ, data = m.fetch("1", "(UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY.PEEK[])")
    assert data[0][1] == raw and b"RFC822.SIZE %d" % len(raw) in data[0][0]
    typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (Subject)] BODY.PEEK[1] RFC822.HEADER)")
    assert data[0][1] == b"Subject: over the store\r\n\r\n"
    assert data[1][1] == b"Hello through REST.\r\n"
    assert data[2][1] == raw[: raw.index(b"\r\n\r\n") + 4]
    typ, data = m.fetch("1", "(BODY[TEXT]<6.7>)")
    assert data[0][1] == b"through" and b"\\Seen" in data[0][0] + data[1]
    assert m.store("1", "-FLAGS", "(\\Seen)")[0] == "OK"
    assert m.search(None, "SUBJECT", '"over the store"')[1] == [b"1"]
    assert m.search(None, "BODY", "REST")[1] == [b"1"]
    assert m.store("1", "+FLAGS", "(\\Flagged)")[0] == "OK"
    assert m.fetch("1", "(FLAGS)")[1][0].count(b"\\Flagged") == 1
    typ, data = m.copy("1", "Archive")
    assert typ == "OK"
    assert m.create("Projects/2026")[0] == "OK"
    assert m.append("Projects/2026", "(\\Seen)", None, make_message("appended"))[0] == "OK"
    assert m.status("Projects/2026", "(MESSAGES UNSEEN)")[1] == [b'"Projects/2026" (MESSAGES 1 UNSEEN 0)']
    typ, data = m.uid("MOVE", "1", "Trash")
    assert typ == "OK"
    assert m.select("Trash")[1] == [b"1"]
    assert m.store("1", "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert m.expunge()[1] == [b"1"]
    assert m.rename("Projects", "Old")[0] == "OK"
    typ, data = m.list()
    assert any(b'"Old/2026"' in d for d in data)
    m.logout()


def test_imap4rev2_savedate_and_subscriptions_over_the_real_store(srv):
    """The store's new columns and calls through a real process (migration 0010 ran at its start)."""
    srv.deliver("alice@example.test", make_message("saved"))
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    assert c.cmd("a0", "LOGIN alice@example.test alice-pw")[-1].startswith(b"a0 OK")
    assert c.cmd("a1", "ENABLE IMAP4rev2")[0] == b"* ENABLED IMAP4rev2"
    assert c.cmd("a2", 'CREATE "Größe/Ä"')[-1].startswith(b"a2 OK")
    assert c.cmd("a3", 'SUBSCRIBE "Größe/Ä"')[-1].startswith(b"a3 OK")
    assert c.cmd("a4", 'DELETE "Größe/Ä"')[-1].startswith(b"a4 OK")
    lines = c.cmd("a5", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "Gr%"')
    assert lines[0] == '* LIST (\\HasNoChildren) "/" {7}\r\nGröße ("CHILDINFO" ("SUBSCRIBED"))'.encode()
    lines = c.cmd("a6", "SELECT INBOX")
    assert b"* 1 EXISTS" in lines and not any(b"RECENT" in ln for ln in lines)
    today = time.strftime("%d-%b-%Y", time.gmtime()).encode()
    assert c.cmd("a7", "FETCH 1 (FLAGS SAVEDATE)")[0].startswith(b'* 1 FETCH (FLAGS () SAVEDATE "' + today)
    assert c.cmd("a8", "SEARCH SAVEDON " + today.decode())[0] == b'* ESEARCH (TAG "a8") ALL 1'
    c.close()


def test_pop3_over_the_real_store(srv):
    msgs = [make_message(f"p{i}") for i in range(3)]
    for raw in msgs:
        srv.deliver("bob@example.test", raw)
    p = poplib.POP3("127.0.0.1", srv.port("pop3"))
    p.user("bob@example.test")
    p.pass_("bob-pw")
    assert p.stat() == (3, sum(map(len, msgs)))  # from the mailbox status: no per-message call needed
    uidl = p.uidl()[1]
    assert [int(x.split()[1]) for x in p.list()[1]] == [len(m) for m in msgs]
    assert b"\r\n".join(p.retr(2)[1]) + b"\r\n" == msgs[1]
    second = poplib.POP3("127.0.0.1", srv.port("pop3"))
    second.user("bob@example.test")
    with pytest.raises(poplib.error_proto, match=r"IN-USE"):
        second.pass_("bob-pw")
    p.dele(1)
    p.quit()
    p = poplib.POP3("127.0.0.1", srv.port("pop3"))
    p.user("bob@example.test")
    p.pass_("bob-pw")
    assert p.stat()[0] == 2
    assert p.uidl()[1] == [b"%d %s" % (i, u.split()[1]) for i, u in enumerate(uidl[1:], 1)]
    p.quit()


def test_idle_push_within_a_second(srv):
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.cmd("a1", "LOGIN carol@example.test carol-pw")
    c.cmd("a2", "SELECT INBOX")
    c.send("a3 IDLE")
    assert c.line() == b"+ idling"
    for n in (1, 2):
        t0 = time.monotonic()
        srv.deliver("carol@example.test", make_message(f"pushed {n}"))
        c.sock.settimeout(1.0)
        assert c.line() == b"* %d EXISTS" % n
        assert time.monotonic() - t0 < 1.0
        c.line()  # RECENT
    c.sock.settimeout(10)
    c.send("DONE")
    assert c.until("a3")[-1] == b"a3 OK IDLE terminated"


def test_notify_between_commands_over_nats(srv):
    """NOTIFY (RFC 5465) over the real event stream: a delivery and another session's APPEND reach a
    session that waits between commands (no IDLE, no NOOP) within a second, as STATUS and EXISTS."""
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.cmd("a1", "LOGIN carol@example.test carol-pw")
    exists = next(int(ln.split()[1]) for ln in c.cmd("a2", "SELECT INBOX") if ln.endswith(b" EXISTS"))
    c.cmd("a3", "NOTIFY SET (SELECTED (MessageNew MessageExpunge)) (PERSONAL (MessageNew MessageExpunge))")
    other = Raw("127.0.0.1", srv.port("imap"))
    other.line()
    other.cmd("b1", "LOGIN carol@example.test carol-pw")
    c.sock.settimeout(1.0)
    t0 = time.monotonic()
    assert other.cmd("b2", "APPEND Drafts {5+}\r\nHello")[-1].startswith(b"b2 OK")
    assert c.line().startswith(b'* STATUS "Drafts" (MESSAGES ')
    srv.deliver("carol@example.test", make_message("notified"))
    assert c.line() == b"* %d EXISTS" % (exists + 1)
    assert time.monotonic() - t0 < 2.0
    c.line()  # RECENT
    c.sock.settimeout(10)
    assert c.cmd("a4", "NOTIFY NONE") == [b"a4 OK NOTIFY completed"]
