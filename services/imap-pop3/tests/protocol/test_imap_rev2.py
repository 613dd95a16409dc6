"""IMAP4rev2 (RFC 9051) per session: `ENABLE IMAP4rev2` changes only the session that sent it. A rev2 and
a rev1 session of one user side by side: no \\Recent anywhere for rev2 (SELECT, FETCH FLAGS, new mail,
STATUS RECENT and SEARCH RECENT/NEW/OLD refused) while rev1 keeps it; SEARCH answers ESEARCH; OK [CLOSED];
mailbox names in UTF-8 on the wire for rev2 and modified UTF-7 for rev1, one name in the store. Then
LIST-EXTENDED (RFC 5258) over subscriptions that outlived their mailboxes, and SAVEDATE (RFC 8514)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from imaptest import Raw, make_message


def session(srv, rev2: bool = False) -> Raw:
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    assert c.cmd("a0", "LOGIN alice@example.test alice-pw")[-1].startswith(b"a0 OK")
    if rev2:
        assert c.cmd("a1", "ENABLE IMAP4rev2") == [b"* ENABLED IMAP4rev2", b"a1 OK ENABLE completed"]
    return c


def test_capabilities_name_both_revisions_and_savedate(srv):
    c = Raw("127.0.0.1", srv.port("imap"))
    greeting = c.line()
    assert b" IMAP4rev1 IMAP4rev2 " in greeting
    login = c.cmd("a0", "LOGIN alice@example.test alice-pw")[-1]
    for cap in (b"IMAP4rev2", b"SAVEDATE", b"LIST-EXTENDED", b"SEARCHRES", b"ESEARCH"):
        assert b" " + cap + b" " in login
    assert c.cmd("a1", "ENABLE IMAP4rev2 IMAP4rev2 X-UNKNOWN")[0] == b"* ENABLED IMAP4rev2"
    assert c.cmd("a2", "ENABLE IMAP4rev2")[0] == b"* ENABLED"  # once is enough
    # the answer is the same string every time (it is kept per state), and after login it differs
    again = Raw("127.0.0.1", srv.port("imap"))
    assert again.line() == greeting
    assert again.cmd("a0", "LOGIN alice@example.test alice-pw")[-1] == login


def test_rev2_and_rev1_sessions_side_by_side(srv):
    for i in range(2):
        srv.deliver("alice@example.test", make_message(f"m{i}"))
    v2, v1 = session(srv, rev2=True), session(srv)
    lines = v2.cmd("s1", "SELECT INBOX")
    assert b"* 2 EXISTS" in lines and not any(b"RECENT" in ln for ln in lines)
    assert b'* LIST (\\HasNoChildren) "/" "INBOX"' in lines  # RFC 9051 §6.3.2: the name as the server has it
    assert not any(ln.startswith(b"* LIST") for ln in v1.cmd("t0", "EXAMINE INBOX"))
    # rev2 claimed no \Recent: the rev1 session selecting after it still has both
    assert b"* 2 RECENT" in v1.cmd("t1", "SELECT INBOX")
    assert v2.cmd("s2", "FETCH 1:2 FLAGS")[:2] == [b"* 1 FETCH (FLAGS ())", b"* 2 FETCH (FLAGS ())"]
    assert v1.cmd("t2", "FETCH 1 FLAGS")[0] == b"* 1 FETCH (FLAGS (\\Recent))"
    # SEARCH is ESEARCH for rev2 (RFC 9051 §6.4.4), plain SEARCH for rev1
    assert v2.cmd("s3", "SEARCH ALL") == [b'* ESEARCH (TAG "s3") ALL 1:2', b"s3 OK SEARCH completed"]
    assert v2.cmd("s4", "UID SEARCH UNSEEN")[0] == b'* ESEARCH (TAG "s4") UID ALL 1:2'
    assert v2.cmd("s5", "SEARCH DELETED") == [b'* ESEARCH (TAG "s5")', b"s5 OK SEARCH completed"]
    assert v2.cmd("s6", "SEARCH RETURN (COUNT) ALL")[0] == b'* ESEARCH (TAG "s6") COUNT 2'
    assert v1.cmd("t3", "SEARCH ALL")[0] == b"* SEARCH 1 2"
    # \Recent's grammar is gone for rev2 only
    for tag, text in (("s7", "SEARCH RECENT"), ("s8", "SEARCH NEW"), ("s9", "SEARCH OLD")):
        assert v2.cmd(tag, text)[-1].startswith(tag.encode() + b" BAD")
    assert v2.cmd("sa", "STATUS Sent (MESSAGES RECENT)")[-1].startswith(b"sa BAD")
    assert v2.cmd("sb", 'LIST "" INBOX RETURN (STATUS (RECENT))')[-1].startswith(b"sb BAD")
    assert v1.cmd("t4", "SEARCH RECENT")[0] == b"* SEARCH 1 2"
    assert v1.cmd("t5", "STATUS Sent (RECENT)")[0] == b'* STATUS "Sent" (RECENT 0)'
    # new mail: EXISTS alone for rev2, EXISTS and RECENT for rev1 (it has the new one \Recent)
    srv.deliver("alice@example.test", make_message("new"))
    assert v2.cmd("n1", "NOOP") == [b"* 3 EXISTS", b"n1 OK NOOP completed"]
    assert v1.cmd("t6", "NOOP")[:2] == [b"* 3 EXISTS", b"* 3 RECENT"]
    assert v2.cmd("sc", "FETCH 3 FLAGS")[0] == b"* 3 FETCH (FLAGS ())"
    # SELECT with a mailbox selected: OK [CLOSED] first for rev2; rev1 without CONDSTORE has none
    assert v2.cmd("sd", "EXAMINE Sent")[0] == b"* OK [CLOSED] Previous mailbox closed"
    assert not any(b"CLOSED" in ln for ln in v1.cmd("t7", "EXAMINE Sent"))
    v1.close()
    v2.close()


def test_rev2_mailbox_names_are_utf8_on_the_wire(srv):
    v1, v2 = session(srv), session(srv, rev2=True)
    assert v1.cmd("t1", "CREATE Entw&APw-rfe")[-1].startswith(b"t1 OK")
    listed = v2.cmd("s1", 'LIST "" Entw*')
    assert listed[0] == '* LIST (\\HasNoChildren) "/" {9}\r\nEntwürfe'.encode()
    assert v2.cmd("s2", 'STATUS "Entwürfe" (MESSAGES)')[0] == "* STATUS {9}\r\nEntwürfe (MESSAGES 0)".encode()
    # for rev2 '&' is an ampersand: the modified UTF-7 spelling names another mailbox
    assert v2.cmd("s3", "SELECT Entw&APw-rfe")[-1].startswith(b"s3 NO [NONEXISTENT]")
    assert v2.cmd("s4", 'CREATE "Ä&B"')[-1].startswith(b"s4 OK")
    assert v1.cmd("t2", 'LIST "" *&-B')[0] == b'* LIST (\\HasNoChildren) "/" "&AMQ-&-B"'
    lines = v2.cmd("s5", 'SELECT "Ä&B"')
    assert lines[-1].startswith(b"s5 OK [READ-WRITE]")
    assert '* LIST (\\HasNoChildren) "/" {4}\r\nÄ&B'.encode() in lines
    assert b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"' in v2.cmd("s6", "EXAMINE Sent")
    assert b'* LIST (\\HasNoChildren) "/" "INBOX"' in v2.cmd("s7", "EXAMINE inbox")
    # hostile names: not UTF-8, or with a control character, are refused; a pattern so matches nothing
    v2.send_raw(b'h1 CREATE "\xff\xfeX"\r\n')
    assert v2.until("h1")[-1].startswith(b"h1 NO [CANNOT]")
    v2.send_raw(b"h2 CREATE {3+}\r\na\x01b\r\n")
    assert v2.until("h2")[-1].startswith(b"h2 NO [CANNOT]")
    decomposed = "Entwu\u0308rfe2"  # not NFC: a rev2 client cannot create it (RFC 9051 §6.3.4, RFC 5198)
    assert v2.cmd("h5", f'CREATE "{decomposed}"')[-1].startswith(b"h5 NO [CANNOT]")
    v2.send_raw(b'h3 LIST "" "\xc3("\r\n')
    assert v2.until("h3") == [b"h3 OK LIST completed"]
    v2.send_raw(b'h4 SELECT "\xed\xa0\x80"\r\n')  # an encoded surrogate is not UTF-8
    assert v2.until("h4")[-1].startswith(b"h4 NO [NONEXISTENT]")
    assert v1.cmd("t3", 'LIST "" *')[-1] == b"t3 OK LIST completed"  # nothing odd was stored
    v1.close()
    v2.close()


def test_list_subscribed_shows_subscriptions_whose_mailbox_is_gone(srv):
    c = session(srv)
    for tag, text in (("a1", "CREATE x/y/z"), ("a2", "SUBSCRIBE x/y/z"), ("a3", "CREATE keep"),
                      ("a4", "SUBSCRIBE keep"), ("a5", "DELETE x/y/z"), ("a6", "DELETE x/y"),
                      ("a7", "DELETE x")):  # fmt: skip
        assert c.cmd(tag, text)[-1].startswith(tag.encode() + b" OK"), text
    lines = c.cmd("b1", 'LIST (SUBSCRIBED) "" *')
    assert b'* LIST (\\NonExistent \\Subscribed) "/" "x/y/z"' in lines
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" "keep"' in lines
    assert b"x/y/z" not in b"".join(c.cmd("b2", 'LIST "" *'))  # only SUBSCRIBED selects it
    # RECURSIVEMATCH: the ancestors that match, with CHILDINFO; x and x/y exist nowhere but above x/y/z
    lines = c.cmd("b3", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" %')
    assert b'* LIST (\\NonExistent) "/" "x" ("CHILDINFO" ("SUBSCRIBED"))' in lines
    assert b'"x/y"' not in b"".join(lines)
    lines = c.cmd("b4", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" x/%')
    assert lines == [
        b'* LIST (\\NonExistent) "/" "x/y" ("CHILDINFO" ("SUBSCRIBED"))',
        b"b4 OK LIST completed",
    ]
    # several patterns, REMOTE (we have none) and RETURN (CHILDREN) are taken
    lines = c.cmd("b5", 'LIST (SUBSCRIBED REMOTE) "" (keep "x/y/z" nothing) RETURN (CHILDREN)')
    assert lines == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "keep"',
        b'* LIST (\\NonExistent \\Subscribed) "/" "x/y/z"',
        b"b5 OK LIST completed",
    ]
    assert b'* LSUB (\\Noselect) "/" "x/y/z"' in c.cmd("b6", 'LSUB "" *')
    assert c.cmd("b7", "UNSUBSCRIBE x/y/z")[-1].startswith(b"b7 OK")
    assert b"x/y/z" not in b"".join(c.cmd("b8", 'LIST (SUBSCRIBED) "" *'))
    # a mailbox made again under the same name is subscribed still (the subscription is by name)
    c.cmd("b9", "SUBSCRIBE keep")
    c.cmd("c1", "DELETE keep")
    c.cmd("c2", "CREATE keep")
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" "keep"' in c.cmd(
        "c3", 'LIST "" keep RETURN (SUBSCRIBED)'
    )
    c.close()


def test_list_patterns_are_bounded(srv):
    c = session(srv)
    many = " ".join(f"p{i}" for i in range(65))
    assert c.cmd("a1", f'LIST "" ({many})')[-1].startswith(b"a1 BAD Too many LIST patterns")
    enough = " ".join(f"p{i}" for i in range(63)) + " INBOX"
    assert c.cmd("a2", f'LIST "" ({enough})') == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b"a2 OK LIST completed",
    ]
    c.close()


def _day(dt: datetime) -> str:
    return dt.strftime("%d-%b-%Y")


def test_savedate_fetch_and_search(srv, store):
    old = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    srv.deliver("alice@example.test", make_message("delivered"))
    c = session(srv)
    c.send_raw(b'a1 APPEND INBOX "03-Feb-2001 04:05:06 +0000" {5+}\r\nHi!\r\n\r\n')
    assert c.until("a1")[-1].startswith(b"a1 OK")
    c.cmd("a2", "SELECT INBOX")
    now = datetime.now(UTC)
    lines = c.cmd("a3", "FETCH 1:2 (INTERNALDATE SAVEDATE)")
    assert len(lines) == 3 and all(b' SAVEDATE "' + _day(now).encode() in ln for ln in lines[:2])
    assert b'INTERNALDATE "03-Feb-2001 04:05:06 +0000"' in lines[1]  # saved today, dated 2001
    # the copy is saved anew in its mailbox
    assert c.cmd("a4", "COPY 2 Trash")[-1].startswith(b"a4 OK")
    assert c.cmd("a5", f"SEARCH SAVEDON {_day(now)}")[0] == b"* SEARCH 1 2"
    assert c.cmd("a6", f"SEARCH SAVEDBEFORE {_day(now)}")[0] == b"* SEARCH"
    assert c.cmd("a7", f"SEARCH SAVEDSINCE {_day(now + timedelta(days=2))}")[0] == b"* SEARCH"
    assert (
        c.cmd("a8", f"UID SEARCH ON {_day(old)} SAVEDSINCE {_day(now - timedelta(days=2))}")[0]
        == b"* SEARCH 2"
    )
    assert c.cmd("a9", "SEARCH SAVEDATESUPPORTED")[0] == b"* SEARCH 1 2"
    assert (
        c.cmd("b1", 'SEARCH OR SAVEDBEFORE 1-Jan-2000 TEXT "Hi!"')[0] == b"* SEARCH 2"
    )  # the evaluator's path
    c.cmd("b2", "EXAMINE Trash")
    assert f'* 1 FETCH (SAVEDATE "{_day(now)}'.encode() in c.cmd("b3", "FETCH 1 SAVEDATE")[0]
    # rows stored before the store kept save dates: NIL, and no SAVED* key matches them
    sql = "UPDATE messages SET saved_at = NULL"
    store.local.call(store.local.core.db.write(lambda tx: tx.run(sql, {})))
    c.cmd("b4", "EXAMINE INBOX")
    assert c.cmd("b5", "FETCH 1:2 SAVEDATE")[:2] == [b"* 1 FETCH (SAVEDATE NIL)", b"* 2 FETCH (SAVEDATE NIL)"]
    assert c.cmd("b6", f"SEARCH SAVEDON {_day(now)}")[0] == b"* SEARCH"
    assert c.cmd("b7", f"SEARCH NOT SAVEDON {_day(now)}")[0] == b"* SEARCH 1 2"
    assert c.cmd("b8", "SEARCH SAVEDATESUPPORTED")[0] == b"* SEARCH 1 2"
    assert c.cmd("b9", "FETCH 1 SAVEDATE.PEEK")[-1].startswith(b"b9 BAD")
    c.close()


def test_searchres_saves_a_result_for_later_commands(srv):
    """RFC 5182 (part of IMAP4rev2): SEARCH RETURN (SAVE) keeps the matches as "$" for FETCH, STORE, COPY,
    SEARCH and UID forms; MIN/MAX alone save only those; an expunge drops a message from it; a new
    SELECT empties it."""
    for i in range(4):
        srv.deliver("alice@example.test", make_message(f"m{i}"), flags=("\\Seen",) if i % 2 else ())
    c = session(srv, rev2=True)
    c.cmd("a1", "SELECT INBOX")
    assert c.cmd("a2", "FETCH $ UID") == [b"a2 OK FETCH completed"]  # nothing saved yet: empty
    assert c.cmd("a3", "SEARCH RETURN (SAVE) UNSEEN") == [b"a3 OK SEARCH completed"]  # SAVE alone: no ESEARCH
    assert c.cmd("a4", "FETCH $ UID")[:2] == [b"* 1 FETCH (UID 1)", b"* 3 FETCH (UID 3)"]
    assert c.cmd("a5", "UID SEARCH $")[0] == b'* ESEARCH (TAG "a5") UID ALL 1,3'
    assert c.cmd("a6", "SEARCH RETURN (SAVE COUNT) $ UID 3:*")[0] == b'* ESEARCH (TAG "a6") COUNT 1'
    assert c.cmd("a7", "UID FETCH $ FLAGS")[0] == b"* 3 FETCH (UID 3 FLAGS ())"
    assert c.cmd("a8", "SEARCH RETURN (SAVE MAX) ALL")[0] == b'* ESEARCH (TAG "a8") MAX 4'
    assert c.cmd("a9", "STORE $ +FLAGS.SILENT (\\Deleted)") == [b"a9 OK STORE completed"]
    assert c.cmd("b1", "COPY $ Trash")[-1].startswith(b"b1 OK [COPYUID ")
    assert c.cmd("b2", "EXPUNGE")[0] == b"* 4 EXPUNGE"
    assert c.cmd("b3", "FETCH $ UID") == [b"b3 OK FETCH completed"]  # the expunged message left "$"
    c.cmd("b4", "SEARCH RETURN (SAVE) ALL")
    c.cmd("b5", "EXAMINE INBOX")
    assert c.cmd("b6", "SEARCH $") == [b'* ESEARCH (TAG "b6")', b"b6 OK SEARCH completed"]
    # a rev1 session has it too, as an extension of its own
    v1 = session(srv)
    v1.cmd("c1", "SELECT INBOX")
    v1.cmd("c2", "SEARCH RETURN (SAVE MIN) SEEN")
    assert v1.cmd("c3", "FETCH $ UID")[0] == b"* 2 FETCH (UID 2)"
    assert v1.cmd("c4", "SEARCH $")[0] == b"* SEARCH 2"
    assert v1.cmd("c5", "FETCH $:4 UID")[-1].startswith(b"c5 BAD")
    c.close()
    v1.close()
