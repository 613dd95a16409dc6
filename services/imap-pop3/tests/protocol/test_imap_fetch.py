"""FETCH and UID FETCH: every data item, sections, partials, BODY.PEEK versus \\Seen, CHANGEDSINCE."""

from __future__ import annotations

import imaplib

from imaptest import Raw, make_message

MULTI = (
    b"From: Carol <carol@elsewhere.test>\r\nTo: alice@example.test\r\nSubject: parts\r\n"
    b"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <parts@x.test>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n'
    b"first part\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nX-A: 1\r\n\r\ninner text\r\n"
    b"--XX--\r\n"
)


def selected(srv, mailbox="INBOX", cmd="SELECT") -> Raw:
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.cmd("a0", "LOGIN alice@example.test alice-pw")
    assert c.cmd("s0", f"{cmd} {mailbox}")[-1].startswith(b"s0 OK")
    return c


def test_select_responses(srv):
    srv.deliver("alice@example.test", make_message("a"), flags=("\\Seen",))
    srv.deliver("alice@example.test", make_message("b"))
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.cmd("a0", "LOGIN alice@example.test alice-pw")
    lines = c.cmd("a1", "SELECT INBOX")
    assert lines[0] == b"* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft)"
    assert (
        lines[1]
        == b"* OK [PERMANENTFLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft \\*)] Flags permitted"
    )
    assert b"* 2 EXISTS" in lines and b"* 2 RECENT" in lines and b"* OK [UNSEEN 2] First unseen" in lines
    assert any(ln.startswith(b"* OK [UIDVALIDITY ") for ln in lines)
    assert b"* OK [UIDNEXT 3] Predicted next UID" in lines
    assert lines[-1] == b"a1 OK [READ-WRITE] SELECT completed"
    lines = c.cmd("a2", "EXAMINE INBOX")
    assert b"* 0 RECENT" in lines and b"* OK [PERMANENTFLAGS ()] Read-only mailbox" in lines
    assert lines[-1] == b"a2 OK [READ-ONLY] EXAMINE completed"
    assert c.cmd("a3", "SELECT nothere")[-1].startswith(b"a3 NO [NONEXISTENT]")
    assert c.cmd("a4", "FETCH 1 FLAGS")[-1].startswith(
        b"a4 NO [CLIENTBUG]"
    )  # failed SELECT: nothing selected


def test_every_simple_item(srv):
    msg = make_message("items")
    srv.deliver("alice@example.test", msg)
    c = selected(srv)
    line = c.cmd("a1", "FETCH 1 (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODY BODYSTRUCTURE MODSEQ)")[0]
    assert line.startswith(b'* 1 FETCH (UID 1 FLAGS (\\Recent) RFC822.SIZE %d INTERNALDATE "' % len(msg))
    assert (
        b'ENVELOPE ("Fri, 27 Nov 2026 10:00:00 +0000" "items" (("Carol" NIL "carol" "elsewhere.test"))'
        in line
    )
    assert b'BODY ("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 11 1)' in line
    assert b'BODYSTRUCTURE ("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 11 1 NIL NIL NIL NIL)' in line
    assert b" MODSEQ (" in line
    assert c.cmd("a2", "FETCH 1 ALL")[0].startswith(b"* 1 FETCH (FLAGS (\\Recent) INTERNALDATE")
    full = c.cmd("a3", "FETCH 1 FULL")[0]  # CONDSTORE is on since FETCH MODSEQ: FLAGS bring MODSEQ
    assert b' BODY ("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 11 1) MODSEQ (' in full


def test_body_sections_and_partials(srv):
    srv.deliver("alice@example.test", MULTI)
    c = selected(srv)
    head_end = MULTI.index(b"\r\n\r\n") + 4
    line = c.cmd("a1", "FETCH 1 (BODY.PEEK[HEADER])")[0]
    assert line == b"* 1 FETCH (BODY[HEADER] {%d}\r\n%s)" % (head_end, MULTI[:head_end])
    line = c.cmd("a2", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject To)])")[0]
    assert (
        line
        == b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT TO)] {42}\r\nTo: alice@example.test\r\nSubject: parts\r\n\r\n)"
    )
    line = c.cmd(
        "a3", "FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (From To Subject Date Message-ID MIME-Version)])"
    )[0]
    assert line.endswith(b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n)')
    assert c.cmd("a4", "FETCH 1 BODY.PEEK[1]")[0] == b"* 1 FETCH (BODY[1] {10}\r\nfirst part)"
    assert (
        c.cmd("a5", "FETCH 1 BODY.PEEK[1.MIME]")[0]
        == b"* 1 FETCH (BODY[1.MIME] {28}\r\nContent-Type: text/plain\r\n\r\n)"
    )
    assert (
        c.cmd("a6", "FETCH 1 BODY.PEEK[2.HEADER]")[0]
        == b"* 1 FETCH (BODY[2.HEADER] {26}\r\nSubject: inner\r\nX-A: 1\r\n\r\n)"
    )
    assert c.cmd("a7", "FETCH 1 BODY.PEEK[2.TEXT]")[0] == b"* 1 FETCH (BODY[2.TEXT] {10}\r\ninner text)"
    assert c.cmd("a8", "FETCH 1 BODY.PEEK[2.1]")[0] == b"* 1 FETCH (BODY[2.1] {10}\r\ninner text)"
    assert c.cmd("a9", "FETCH 1 BODY.PEEK[9]")[0] == b"* 1 FETCH (BODY[9] {0}\r\n)"
    assert c.cmd("b1", "FETCH 1 BODY.PEEK[]<6.5>")[0] == b"* 1 FETCH (BODY[]<6> {5}\r\nCarol)"
    assert c.cmd("b2", "FETCH 1 BODY.PEEK[TEXT]<100000.5>")[0] == b"* 1 FETCH (BODY[TEXT]<100000> {0}\r\n)"
    line = c.cmd("b3", "FETCH 1 (RFC822.HEADER RFC822.TEXT)")[0]
    assert line.startswith(b"* 1 FETCH (RFC822.HEADER {%d}" % head_end) and b" RFC822.TEXT {" in line
    bs = c.cmd("b4", "FETCH 1 BODYSTRUCTURE")[0]
    assert b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 36 (NIL "inner" NIL NIL NIL NIL NIL NIL NIL NIL)' in bs
    assert bs.endswith(b' "MIXED" ("BOUNDARY" "XX") NIL NIL NIL))')
    # the whole message and parts in one FETCH: the message as it is, the parts cut by the store
    line = c.cmd("b5", "FETCH 1 (BODY.PEEK[] BODY.PEEK[1] BODY.PEEK[2.HEADER])")[0]
    assert line == (
        b"* 1 FETCH (BODY[] {%d}\r\n%s BODY[1] {10}\r\nfirst part BODY[2.HEADER] {26}\r\nSubject: inner\r\nX-A: 1\r\n\r\n)"
        % (len(MULTI), MULTI)
    )


def test_peek_keeps_unseen_body_sets_seen(srv):
    srv.deliver("alice@example.test", make_message("x"))
    c = selected(srv)
    assert c.cmd("a1", "FETCH 1 BODY.PEEK[]")[0].startswith(b"* 1 FETCH (BODY[] {")
    assert c.cmd("a2", "FETCH 1 FLAGS")[0] == b"* 1 FETCH (FLAGS (\\Recent))"
    line = c.cmd("a3", "FETCH 1 BODY[TEXT]")[0]
    assert line.startswith(b"* 1 FETCH (BODY[TEXT] {11}\r\nHi there.\r\n FLAGS (\\Seen \\Recent))")
    assert c.cmd("a4", "FETCH 1 RFC822")[0].startswith(b"* 1 FETCH (RFC822 {")  # already seen: no FLAGS
    c2 = selected(srv, cmd="EXAMINE")
    srv.deliver("alice@example.test", make_message("y"))
    c2.cmd("n1", "NOOP")
    c2.cmd("a5", "FETCH 2 BODY[]")
    # read-only: still unseen, and \Recent (no session has SELECTed since it came; EXAMINE leaves it so)
    assert c2.cmd("a6", "FETCH 2 FLAGS")[0] == b"* 2 FETCH (FLAGS (\\Recent))"


def test_uid_fetch_ranges_and_missing_uids(srv):
    for i in range(5):
        srv.deliver("alice@example.test", make_message(f"m{i}"))
    c = selected(srv)
    lines = c.cmd("a1", "UID FETCH 2:4,9 (FLAGS)")
    assert lines[:-1] == [b"* %d FETCH (UID %d FLAGS (\\Recent))" % (i, i) for i in (2, 3, 4)]
    assert c.cmd("a2", "UID FETCH 100:* UID")[0] == b"* 5 FETCH (UID 5)"
    assert c.cmd("a3", "UID FETCH 77 UID")[-1] == b"a3 OK UID FETCH completed"
    assert c.cmd("a4", "FETCH 6 UID")[-1].startswith(b"a4 BAD Invalid message sequence number")
    assert c.cmd("a5", "FETCH 5:3 UID")[:-1] == [
        b"* 3 FETCH (UID 3)",
        b"* 4 FETCH (UID 4)",
        b"* 5 FETCH (UID 5)",
    ]


def test_fetch_in_an_empty_mailbox(srv):
    c = selected(srv, "Archive")
    assert c.cmd("a1", "FETCH 1:* FLAGS") == [b"a1 OK FETCH completed"]
    assert c.cmd("a2", "UID FETCH 1:* FLAGS") == [b"a2 OK UID FETCH completed"]


def test_changedsince(srv):
    for i in range(3):
        srv.deliver("alice@example.test", make_message(f"m{i}"))
    c = selected(srv)
    modseq = int(c.cmd("a1", "FETCH 3 MODSEQ")[0].split(b"MODSEQ (")[1].split(b")")[0])
    c.cmd("a2", "STORE 2 +FLAGS.SILENT (\\Flagged)")
    lines = c.cmd("a3", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})")
    assert len(lines) == 2 and lines[0].startswith(b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent) MODSEQ (")


def test_imaplib_fetch_many(srv):
    bodies = [make_message(f"n{i}", body=f"body {i}\n" * 50) for i in range(30)]
    for b in bodies:
        srv.deliver("alice@example.test", b)
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    m.login("alice@example.test", "alice-pw")
    m.select("INBOX")
    typ, data = m.fetch("1:*", "(BODY.PEEK[])")
    got = [d[1] for d in data if isinstance(d, tuple)]
    assert got == bodies
    m.logout()


def test_condstore_enabled_adds_modseq_to_flags(srv):
    srv.deliver("alice@example.test", make_message("x"))
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.cmd("a0", "LOGIN alice@example.test alice-pw")
    assert c.cmd("a1", "ENABLE CONDSTORE")[0] == b"* ENABLED CONDSTORE"
    lines = c.cmd("a2", "SELECT INBOX")
    assert any(ln.startswith(b"* OK [HIGHESTMODSEQ ") for ln in lines)
    assert c.cmd("a3", "FETCH 1 FLAGS")[0].startswith(b"* 1 FETCH (FLAGS (\\Recent) MODSEQ (")
    assert c.cmd("a4", "FETCH 1 UID")[0] == b"* 1 FETCH (UID 1)"


def test_a_set_of_16000_ranges_answers_at_once_in_bounded_memory(srv):
    """16,000 copies of `1:*` once took 3 s and 1.1 GB: the parser merges them into one range."""
    import tracemalloc

    for i in range(300):
        srv.deliver("alice@example.test", make_message(f"m{i}"))
    c = selected(srv)
    many = ",".join(["1:*"] * 16_000)
    tracemalloc.start()
    try:
        lines = c.cmd("a1", f"UID FETCH {many} (FLAGS)")
        lines += c.cmd("a2", f"FETCH {many},7,5:9,299:* (UID)")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines[-1] == b"a2 OK FETCH completed" and len(lines) == 2 * 301
    assert sum(ln.startswith(b"* 300 FETCH") for ln in lines) == 2
    assert peak < 16 * 1024 * 1024  # the set as written is ~3 MB of tuples; the answer is small
