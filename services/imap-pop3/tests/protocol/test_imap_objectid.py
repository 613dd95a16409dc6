"""OBJECTID (RFC 8474): MAILBOXID on CREATE, SELECT/EXAMINE and STATUS, kept across RENAME and new after
DELETE + CREATE; EMAILID shared by a message and its copies, THREADID NIL; SEARCH EMAILID and THREADID."""

from __future__ import annotations

import re

from imaptest import Raw, make_message


def session(srv) -> Raw:
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    assert c.cmd("a0", "LOGIN alice@example.test alice-pw")[-1].startswith(b"a0 OK")
    return c


def mailbox_id(line: bytes) -> bytes:
    return re.search(rb"MAILBOXID \(([A-Za-z0-9_-]+)\)", line).group(1)


def test_mailboxid_follows_the_mailbox_not_its_name(srv):
    c = session(srv)
    assert b" OBJECTID" in c.cmd("a1", "CAPABILITY")[0]
    created = mailbox_id(c.cmd("a2", "CREATE Projects")[-1])
    assert mailbox_id(c.cmd("a3", "STATUS Projects (MAILBOXID MESSAGES)")[0]) == created
    selected = c.cmd("a4", "EXAMINE Projects")
    assert any(ln.startswith(b"* OK [MAILBOXID (") and mailbox_id(ln) == created for ln in selected)
    assert c.cmd("a5", "RENAME Projects Plans")[-1].startswith(b"a5 OK")
    assert mailbox_id(c.cmd("a6", "STATUS Plans (MAILBOXID)")[0]) == created
    c.cmd("a6b", "UNSELECT")
    c.cmd("a7", "DELETE Plans")
    again = mailbox_id(c.cmd("a8", "CREATE Plans")[-1])
    assert again != created
    assert mailbox_id(c.cmd("a9", "STATUS INBOX (MAILBOXID)")[0]) not in (created, again)


def test_emailid_is_shared_by_copies_and_searchable(srv):
    srv.deliver("alice@example.test", make_message("one"))
    srv.deliver("alice@example.test", make_message("two"))
    c = session(srv)
    c.cmd("a1", "SELECT INBOX")
    c.cmd("a2", "COPY 1 INBOX")  # a third message: a copy of the first
    lines = c.cmd("a3", "FETCH 1:3 (UID EMAILID THREADID)")
    ids = [re.search(rb"EMAILID \(([A-Za-z0-9_-]+)\)", ln).group(1) for ln in lines[:3]]
    assert ids[0] == ids[2] != ids[1]
    assert all(b"THREADID NIL" in ln for ln in lines[:3])
    assert c.cmd("a4", f"UID SEARCH EMAILID {ids[0].decode()}")[0] == b"* SEARCH 1 3"
    assert c.cmd("a5", f"SEARCH EMAILID {ids[1].decode()} SEEN")[0] == b"* SEARCH"
    assert c.cmd("a6", "SEARCH EMAILID Mnothing")[0] == b"* SEARCH"
    assert c.cmd("a7", "SEARCH THREADID T1")[0] == b"* SEARCH"
    assert c.cmd("a8", f"SEARCH OR EMAILID {ids[1].decode()} BODY two")[0] == b"* SEARCH 2"  # through the evaluator


def test_another_users_emailid_finds_nothing(srv):
    srv.deliver("bob@example.test", make_message("bob's"))
    bob = Raw("127.0.0.1", srv.port("imap"))
    bob.line()
    bob.cmd("b0", "LOGIN bob@example.test bob-pw")
    bob.cmd("b1", "SELECT INBOX")
    theirs = re.search(rb"EMAILID \(([A-Za-z0-9_-]+)\)", bob.cmd("b2", "FETCH 1 EMAILID")[0]).group(1)
    c = session(srv)
    c.cmd("a1", "SELECT INBOX")
    assert c.cmd("a2", f"SEARCH EMAILID {theirs.decode()}")[0] == b"* SEARCH"
