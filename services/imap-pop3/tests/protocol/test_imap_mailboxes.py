"""The folder tree over IMAP: CREATE, DELETE, RENAME (INBOX too), SUBSCRIBE, LIST and LSUB with `*` and
`%`, LIST-EXTENDED, SPECIAL-USE, CHILDREN, LIST-STATUS, STATUS, and APPEND with literals and LITERAL+."""

from __future__ import annotations

import imaplib
import re
from datetime import datetime, timedelta, timezone

from imaptest import Raw, make_message


def session(srv) -> Raw:
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    assert c.cmd("a0", "LOGIN alice@example.test alice-pw")[-1].startswith(b"a0 OK")
    return c


def names(lines: list[bytes]) -> list[bytes]:
    return [ln.rsplit(b' "/" ', 1)[1] for ln in lines if ln.startswith((b"* LIST", b"* LSUB"))]


def test_list_shows_the_default_folders_with_special_use(srv):
    c = session(srv)
    lines = c.cmd("a1", 'LIST "" "*"')
    assert lines[0] == b'* LIST (\\HasNoChildren) "/" "INBOX"'
    assert b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"' in lines
    assert b'* LIST (\\HasNoChildren \\Trash) "/" "Trash"' in lines
    assert c.cmd("a2", 'LIST "" ""')[0] == b'* LIST (\\Noselect) "/" ""'
    assert names(c.cmd("a3", 'LIST "" inbox')) == [b'"INBOX"']


def test_create_hierarchy_and_wildcards(srv):
    c = session(srv)
    created = c.cmd("a1", "CREATE Work/Projects/Alpha")[-1]
    assert created.startswith(b"a1 OK [MAILBOXID (F") and created.endswith(b")] CREATE completed")
    assert c.cmd("a2", "CREATE Work/")[-1].startswith(b"a2 NO [ALREADYEXISTS]")
    assert c.cmd("a3", "CREATE inbox")[-1].startswith(b"a3 NO [ALREADYEXISTS]")
    assert names(c.cmd("a4", 'LIST "" Work/%')) == [b'"Work/Projects"']
    assert names(c.cmd("a5", 'LIST "" Work/*')) == [b'"Work/Projects"', b'"Work/Projects/Alpha"']
    assert names(c.cmd("a6", "LIST Work/ %")) == [b'"Work/Projects"']
    lines = c.cmd("a7", 'LIST "" %')
    assert b'* LIST (\\HasChildren) "/" "Work"' in lines and b'"Work/Projects"' not in b"".join(lines)
    assert c.cmd("a8", "CREATE &ZeVnLIqe-")[-1].startswith(b"a8 OK")
    assert b'"&ZeVnLIqe-"' in b"".join(c.cmd("a9", 'LIST "" *'))
    assert c.cmd("b1", 'CREATE "bad*name"')[-1].startswith(b"b1 NO [CANNOT]")


def test_delete_rules(srv):
    c = session(srv)
    c.cmd("a1", "CREATE a/b")
    assert c.cmd("a2", "DELETE INBOX")[-1].startswith(b"a2 NO [CANNOT]")
    assert c.cmd("a3", "DELETE nothere")[-1].startswith(b"a3 NO [NONEXISTENT]")
    assert c.cmd("a4", "DELETE a")[-1] == b"a4 OK DELETE completed"  # has a child: stays as \Noselect
    assert b'* LIST (\\Noselect \\HasChildren) "/" "a"' in c.cmd("a5", 'LIST "" *')
    assert c.cmd("a6", "SELECT a")[-1].startswith(b"a6 NO [NONEXISTENT]")
    assert c.cmd("a8", "DELETE a")[-1].startswith(b"a8 NO [HASCHILDREN]")  # \Noselect already (RFC 9051)
    assert c.cmd("a7", "DELETE a/b")[-1].startswith(b"a7 OK")


def test_rename_and_rename_inbox(srv):
    srv.deliver("alice@example.test", make_message("keep me"))
    c = session(srv)
    c.cmd("a1", "CREATE x/y")
    assert c.cmd("a2", "RENAME x z")[-1] == b"a2 OK RENAME completed"
    assert names(c.cmd("a3", 'LIST "" z*')) == [b'"z"', b'"z/y"']
    assert c.cmd("a4", "RENAME z Sent")[-1].startswith(b"a4 NO [ALREADYEXISTS]")
    assert c.cmd("a5", "RENAME nothere q")[-1].startswith(b"a5 NO [NONEXISTENT]")
    assert c.cmd("a6", 'RENAME INBOX "Old Inbox"')[-1].startswith(b"a6 OK")
    assert b"MESSAGES 0" in c.cmd("a7", "STATUS INBOX (MESSAGES)")[0]
    assert c.cmd("a8", 'STATUS "Old Inbox" (MESSAGES)')[0] == b'* STATUS "Old Inbox" (MESSAGES 1)'


def test_subscribe_and_lsub(srv):
    c = session(srv)
    c.cmd("a1", "CREATE news/tech")
    c.cmd("a2", "SUBSCRIBE news/tech")
    c.cmd("a3", "UNSUBSCRIBE Junk")
    lsub = c.cmd("a4", 'LSUB "" *')
    assert b'* LSUB () "/" "news/tech"' in lsub and b'"Junk"' not in b"".join(lsub)
    assert b'* LSUB (\\Noselect) "/" "news"' in c.cmd("a5", 'LSUB "" %')  # parent of a subscribed child
    assert c.cmd("a6", "SUBSCRIBE nothere")[-1].startswith(b"a6 NO [NONEXISTENT]")


def test_list_patterns_with_many_wildcards_answer_at_once_and_block_no_one(srv):
    """14 wildcards against one name took a regular expression a minute, every session waiting."""
    c, other = session(srv), session(srv)
    assert c.cmd("a1", "CREATE " + "a" * 40)[-1].startswith(b"a1 OK")
    c.cmd("a2", "SUBSCRIBE " + "a" * 40)
    c.send("a3 LIST \"\" " + "*a" * 14 + "b")
    c.send("a4 LSUB \"\" " + "%a" * 14 + "b")
    assert other.cmd("b1", "NOOP")[-1] == b"b1 OK NOOP completed"
    assert c.until("a3") == [b"a3 OK LIST completed"]
    assert c.until("a4") == [b"a4 OK LSUB completed"]
    assert names(c.cmd("a5", 'LIST "" ' + "*a" * 14 + "%")) == [b'"' + b"a" * 40 + b'"']


def test_list_extended_and_status_return(srv):
    srv.deliver("alice@example.test", make_message("one"))
    c = session(srv)
    c.cmd("a1", "CREATE p/q")
    c.cmd("a2", "SUBSCRIBE p/q")
    lines = c.cmd("a3", 'LIST (SUBSCRIBED) "" *')
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"' in lines
    assert b'"p"' not in b"".join(lines) and b'"p/q"' in b"".join(lines)
    lines = c.cmd("a4", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" %')
    assert b'* LIST (\\HasChildren) "/" "p" ("CHILDINFO" ("SUBSCRIBED"))' in lines
    lines = c.cmd("a5", 'LIST (SPECIAL-USE) "" *')
    assert names(lines) == [b'"Archive"', b'"Drafts"', b'"Junk"', b'"Sent"', b'"Trash"']
    lines = c.cmd("a6", 'LIST "" (INBOX Sent) RETURN (SUBSCRIBED STATUS (MESSAGES UNSEEN))')
    assert lines[:2] == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* STATUS "INBOX" (MESSAGES 1 UNSEEN 1)',
    ]
    assert c.cmd("a7", 'LIST (BOGUS) "" *')[-1].startswith(b"a7 BAD")


def test_create_special_use(srv):
    c = session(srv)
    assert c.cmd("a1", "CREATE Spam (USE (\\Junk))")[-1].startswith(b"a1 OK")
    assert b'* LIST (\\HasNoChildren \\Junk) "/" "Spam"' in c.cmd("a2", 'LIST "" Spam')
    assert c.cmd("a3", "CREATE X (USE (\\Bogus))")[-1].startswith(b"a3 NO [USEATTR]")


def test_status(srv):
    srv.deliver("alice@example.test", make_message("one"))
    srv.deliver("alice@example.test", make_message("two"), flags=("\\Seen",))
    c = session(srv)
    line = c.cmd("a1", "STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ SIZE)")[0]
    assert line.startswith(b'* STATUS "INBOX" (MESSAGES 2 RECENT 2 UIDNEXT 3 UIDVALIDITY ')
    assert b" UNSEEN 1 HIGHESTMODSEQ " in line and b" SIZE " in line
    assert c.cmd("a2", "STATUS nothere (MESSAGES)")[-1].startswith(b"a2 NO [NONEXISTENT]")


def test_append_literal_kinds_appenduid_and_trycreate(srv):
    c = session(srv)
    msg = make_message("appended")
    c.send(f'a1 APPEND INBOX (\\Seen $Work) "05-Nov-2020 10:00:00 +0100" {{{len(msg)}}}')
    assert c.line() == b"+ Ready for literal data"
    c.send_raw(msg + b"\r\n")
    reply = c.until("a1")[-1]
    assert reply.startswith(b"a1 OK [APPENDUID ") and reply.endswith(b" 1] APPEND completed")
    reply = c.cmd("a2", f"APPEND Drafts {{{len(msg)}+}}\r\n".rstrip("\r\n") + "\r\n" + msg.decode())[-1]
    assert reply.startswith(b"a2 OK [APPENDUID ")
    assert (
        c.cmd("a3", "APPEND Nowhere {3+}\r\nabc")[-1] == b"a3 NO [TRYCREATE] No such mailbox, create it first"
    )
    assert c.cmd("a4", "APPEND INBOX {0+}\r\n")[-1].startswith(b"a4 NO [CANNOT]")
    c.cmd("a5", "SELECT INBOX")
    lines = c.cmd("a6", "FETCH 1 (FLAGS INTERNALDATE)")
    assert lines[0].startswith(b"* 1 FETCH (FLAGS (") and all(f in lines[0] for f in (b"\\Seen", b"$Work", b"\\Recent"))
    # the instant APPEND gave; the store keeps instants, and shows them in +0000
    shown = re.search(rb'INTERNALDATE "([^"]+)"', lines[0]).group(1).decode()
    assert datetime.strptime(shown, "%d-%b-%Y %H:%M:%S %z") == datetime(2020, 11, 5, 10, tzinfo=timezone(timedelta(hours=1)))


def test_append_too_big_is_refused_before_the_client_sends_it(tmp_path, store):
    from imaptest import Running, settings_for

    running = Running(settings_for(tmp_path, max_append_bytes=1000), store)
    try:
        c = session(running)
        c.send("a1 APPEND INBOX {1001}")
        assert c.line() == b"a1 NO [TOOBIG] Message too big (the limit is 1000 octets)"
        assert b"APPENDLIMIT=1000" in c.cmd("a2", "CAPABILITY")[0]
        c.send("a3 APPEND INBOX {5000+}")  # non-synchronizing: the data comes anyway, so we close
        assert c.line() == b"a3 BAD [TOOBIG] Literal too big"
        assert c.line().startswith(b"* BYE")
        assert c.closed()
    finally:
        running.stop()


def test_imaplib_round_trip(srv):
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    m.login("alice@example.test", "alice-pw")
    assert m.create("Projects")[0] == "OK"
    assert m.append("Projects", "(\\Flagged)", None, make_message("via imaplib"))[0] == "OK"
    typ, data = m.list()
    assert any(b'"Projects"' in d for d in data)
    typ, data = m.status("Projects", "(MESSAGES)")
    assert data == [b'"Projects" (MESSAGES 1)']
    assert m.rename("Projects", "Done")[0] == "OK"
    assert m.delete("Done")[0] == "OK"
    m.logout()


def test_a_name_that_is_not_modified_utf7_is_no_not_bad(srv):
    """RFC 3501 §5.1.3: such a name is no mailbox (NO), not a syntax error (BAD); a LIST or LSUB pattern
    or reference that is not modified UTF-7 matches nothing. Every command that takes a mailbox name
    (MULTIAPPEND and GETQUOTAROOT too)."""
    srv.deliver("alice@example.test", make_message("one"))
    c = session(srv)
    bad = ["&Jjo", '"a&AGE-b"', "&ZeVnLIqe", "&Zev/LIqe-", '"&"']
    for i, name in enumerate(bad):
        for j, text in enumerate(
            [f"SELECT {name}", f"EXAMINE {name}", f"DELETE {name}", f"RENAME {name} Other", f"SUBSCRIBE {name}",
             f"UNSUBSCRIBE {name}", f"STATUS {name} (MESSAGES)", f"APPEND {name} {{5+}}\r\nhello",
             f"APPEND {name} {{1+}}\r\na {{1+}}\r\nb", f"GETQUOTAROOT {name}"]
        ):  # fmt: skip
            assert c.cmd(f"n{i}.{j}", text)[-1].startswith(f"n{i}.{j} NO [NONEXISTENT] Invalid mailbox name".encode())
        assert c.cmd(f"c{i}", f"CREATE {name}")[-1].startswith(f"c{i} NO [CANNOT] Invalid mailbox name".encode())
        assert c.cmd(f"r{i}", f"RENAME Sent {name}")[-1].startswith(f"r{i} NO [CANNOT]".encode())
        assert c.cmd(f"l{i}", f'LIST "" {name}') == [f"l{i} OK LIST completed".encode()]
        assert c.cmd(f"k{i}", f"LIST {name} *") == [f"k{i} OK LIST completed".encode()]
        assert c.cmd(f"s{i}", f'LSUB "" {name}') == [f"s{i} OK LSUB completed".encode()]
    assert names(c.cmd("l9", 'LIST "" (&Jjo INBOX)')) == [b'"INBOX"']  # the good pattern still matches
    assert c.cmd("x1", "SELECT INBOX")[-1].startswith(b"x1 OK")
    for j, text in enumerate(["COPY 1 &Jjo", "MOVE 1 &Jjo", "UID COPY 1 &Jjo", "UID MOVE 1 &Jjo"]):
        assert c.cmd(f"m{j}", text)[-1].startswith(f"m{j} NO [NONEXISTENT] Invalid mailbox name".encode())
    assert c.cmd("x2", "FETCH 1 FLAGS")[-1] == b"x2 OK FETCH completed"  # still selected, still there
    assert c.cmd("x3", "SELECT &Jjo")[-1].startswith(b"x3 NO [NONEXISTENT]")
    assert c.cmd("x4", "FETCH 1 FLAGS")[-1].startswith(b"x4 NO [CLIENTBUG]")  # a failed SELECT closes (§6.3.1)
    assert c.cmd("x5", "SELECT &Jjo (BOGUS)")[-1].startswith(b"x5 BAD")  # bad syntax stays BAD
    assert names(c.cmd("x6", 'LIST "" *')) == [b'"INBOX"', b'"Archive"', b'"Drafts"', b'"Junk"', b'"Sent"', b'"Trash"']
    c.close()
    fresh = Raw("127.0.0.1", srv.port("imap"))
    fresh.line()
    assert fresh.cmd("y1", "SELECT &Jjo")[-1].startswith(b"y1 NO [CLIENTBUG]")  # the state comes first
