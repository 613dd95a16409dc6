"""The IMAP parser: a table of commands and what they mean, replayed whole and in random chunks through
the Framer; the limits applied before reading; junk never raises anything but ParseError."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow.store import search as sk
from mailflow_imap_pop3.imap.framing import CONTINUE, FrameError, Framer
from mailflow_imap_pop3.imap.lexer import MAX_LIST_ITEMS, MAX_SEQ_RANGES, ParseError
from mailflow_imap_pop3.imap.parser import parse
from mailflow_imap_pop3.imap.search_parser import MAX_SEARCH_KEYS
from mailflow_imap_pop3.imap.syntax import (
    SAVED,
    Append,
    AppendItem,
    Authenticate,
    CancelUpdate,
    CatUrl,
    Command,
    CopyMove,
    Enable,
    Fetch,
    FetchAtt,
    Id,
    ListCmd,
    Login,
    MailboxArg,
    Notify,
    NotifyGroup,
    Qresync,
    RecentKey,
    Rename,
    Search,
    Section,
    Select,
    SeqArg,
    SeqKey,
    SeqSet,
    Sort,
    Status,
    Store,
    Thread,
    UidKey,
)

SEEN = "\\Seen"
TABLE = [
    (b"a1 CAPABILITY", Command("a1", "CAPABILITY")),
    (b"a1 noop", Command("a1", "NOOP")),
    (
        b'x.1 LOGIN alice@example.test "pa ss\\"w"',
        Command("x.1", "LOGIN", Login("alice@example.test", 'pa ss"w')),
    ),
    (b"a1 LOGIN {5}\r\nalice {3+}\r\npw!", Command("a1", "LOGIN", Login("alice", "pw!"))),
    (b"a1 AUTHENTICATE PLAIN", Command("a1", "AUTHENTICATE", Authenticate("PLAIN"))),
    (
        b"a1 AUTHENTICATE plain AGFsaWNlAHB3",
        Command("a1", "AUTHENTICATE", Authenticate("PLAIN", b"AGFsaWNlAHB3")),
    ),
    (b"a1 AUTHENTICATE PLAIN =", Command("a1", "AUTHENTICATE", Authenticate("PLAIN", b"="))),
    (b"a1 SELECT inbox", Command("a1", "SELECT", Select("INBOX"))),
    (b'a1 EXAMINE "Inbox/Sub" (CONDSTORE)', Command("a1", "EXAMINE", Select("INBOX/Sub", True))),
    (
        b"a1 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
        Command(
            "a1",
            "SELECT",
            Select(
                "INBOX",
                qresync=Qresync(67890007, 20050715194045000, SeqSet(((41, 41), (43, 211), (214, 541)))),
            ),
        ),
    ),
    (
        b"a1 EXAMINE INBOX (QRESYNC (1 0 (1,5:6 3,9:10)) CONDSTORE)",
        Command(
            "a1",
            "EXAMINE",
            Select("INBOX", True, Qresync(1, 0, None, (SeqSet(((1, 1), (5, 6))), SeqSet(((3, 3), (9, 10)))))),
        ),
    ),
    (
        b"a1 SELECT INBOX (QRESYNC (7 9 1:20 (1,20 1,20)))",
        Command(
            "a1",
            "SELECT",
            Select("INBOX", qresync=Qresync(7, 9, SeqSet(((1, 20),)), (SeqSet(((1, 1), (20, 20))),) * 2)),
        ),
    ),
    (
        b"a1 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12 VANISHED)",
        Command("a1", "UID FETCH", Fetch(SeqSet(((1, 0),)), (FetchAtt("FLAGS"),), 12, True)),
    ),
    (b"a1 SELECT Entw&APw-rfe", Command("a1", "SELECT", Select("Entwürfe"))),
    (b"a1 CREATE a/b/", Command("a1", "CREATE", MailboxArg("a/b/"))),
    (b"a1 CREATE Junk2 (USE (\\Junk))", Command("a1", "CREATE", MailboxArg("Junk2", "\\Junk"))),
    (b"a1 DELETE foo", Command("a1", "DELETE", MailboxArg("foo"))),
    (b'a1 RENAME INBOX "Old mail"', Command("a1", "RENAME", Rename("INBOX", "Old mail"))),
    (b"a1 SUBSCRIBE foo", Command("a1", "SUBSCRIBE", MailboxArg("foo"))),
    (b'a1 LIST "" *', Command("a1", "LIST", ListCmd("", ("*",)))),
    (b'a1 LIST "" %/x%', Command("a1", "LIST", ListCmd("", ("%/x%",)))),
    (b'a1 LSUB "" "*"', Command("a1", "LSUB", ListCmd("", ("*",), lsub=True))),
    (
        b'a1 LIST (SUBSCRIBED RECURSIVEMATCH) "" (INBOX "a*") RETURN (CHILDREN STATUS (MESSAGES UNSEEN))',
        Command(
            "a1",
            "LIST",
            ListCmd(
                "",
                ("INBOX", "a*"),
                frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}),
                frozenset({"CHILDREN", "STATUS", "SUBSCRIBED"}),
                ("MESSAGES", "UNSEEN"),
                extended=True,
            ),
        ),
    ),
    (
        b"a1 STATUS INBOX (MESSAGES UIDNEXT)",
        Command("a1", "STATUS", Status("INBOX", ("MESSAGES", "UIDNEXT"))),
    ),
    (
        b'a1 APPEND Drafts (\\Draft \\seen) " 5-Nov-2020 10:00:00 +0100" {5}\r\nhello',
        Command(
            "a1",
            "APPEND",
            Append(
                "Drafts",
                (AppendItem(("\\Draft", SEEN), datetime(2020, 11, 5, 10, 0, tzinfo=timezone(timedelta(hours=1))), b"hello"),),
            ),
        ),
    ),
    (b"a1 APPEND INBOX {3+}\r\nx\r\n", Command("a1", "APPEND", Append("INBOX", (AppendItem((), None, b"x\r\n"),)))),
    (  # MULTIAPPEND (RFC 3502): several messages, each with its own flags and date
        b'a1 APPEND INBOX (\\Seen) {1+}\r\na " 1-Jan-2026 00:00:00 +0000" {1+}\r\nb ~{1+}\r\nc',
        Command("a1", "APPEND", Append("INBOX", (
            AppendItem((SEEN,), None, b"a"),
            AppendItem((), datetime(2026, 1, 1, tzinfo=UTC), b"b"),
            AppendItem((), None, b"c"),
        ))),
    ),  # fmt: skip
    (b"a1 CHECK", Command("a1", "CHECK")),
    (b"a1 EXPUNGE", Command("a1", "EXPUNGE")),
    (b"a1 UID EXPUNGE 3:1", Command("a1", "UID EXPUNGE", SeqArg(SeqSet(((1, 3),))))),  # sets come normalised
    (
        b'a1 FETCH 1:*,7 (FLAGS BODY.PEEK[HEADER.FIELDS (From "To")]<0.100>)',
        Command(
            "a1",
            "FETCH",
            Fetch(
                SeqSet(((7, 7), (1, 0))),  # explicit ranges first, then those with `*`
                (
                    FetchAtt("FLAGS"),
                    FetchAtt("BODY[]", Section((), "HEADER.FIELDS", ("FROM", "TO")), True, (0, 100)),
                ),
            ),
        ),
    ),
    (
        b"a1 UID FETCH 5 (BODY[1.2.MIME] BODY[2.TEXT] BODY[] RFC822.SIZE) (CHANGEDSINCE 12)",
        Command(
            "a1",
            "UID FETCH",
            Fetch(
                SeqSet(((5, 5),)),
                (
                    FetchAtt("BODY[]", Section((1, 2), "MIME")),
                    FetchAtt("BODY[]", Section((2,), "TEXT")),
                    FetchAtt("BODY[]", Section()),
                    FetchAtt("RFC822.SIZE"),
                ),
                12,
            ),
        ),
    ),
    (
        b"a1 FETCH * FAST",
        Command(
            "a1",
            "FETCH",
            Fetch(SeqSet(((0, 0),)), tuple(FetchAtt(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE"))),
        ),
    ),
    (b"a1 FETCH 2 body", Command("a1", "FETCH", Fetch(SeqSet(((2, 2),)), (FetchAtt("BODY"),)))),
    (
        b"a1 STORE 1:3 +FLAGS.SILENT (\\Deleted $Junk)",
        Command("a1", "STORE", Store(SeqSet(((1, 3),)), "add", True, ("\\Deleted", "$Junk"))),
    ),
    (
        b"a1 UID STORE 4 (UNCHANGEDSINCE 9) -FLAGS \\Seen \\Flagged",
        Command("a1", "UID STORE", Store(SeqSet(((4, 4),)), "remove", False, (SEEN, "\\Flagged"), 9)),
    ),
    (b"a1 STORE 1 FLAGS ()", Command("a1", "STORE", Store(SeqSet(((1, 1),)), "replace", False, ()))),
    (b"a1 COPY 1:2 Archive", Command("a1", "COPY", CopyMove(SeqSet(((1, 2),)), "Archive"))),
    (b"a1 UID MOVE 10:* Trash", Command("a1", "UID MOVE", CopyMove(SeqSet(((10, 0),)), "Trash"))),
    (b"a1 ID NIL", Command("a1", "ID", Id(None))),
    (b'a1 ID ("name" "mutt" "os" NIL)', Command("a1", "ID", Id((("name", "mutt"), ("os", None))))),
    (b"a1 ENABLE CONDSTORE X-FOO", Command("a1", "ENABLE", Enable(("CONDSTORE", "X-FOO")))),
    (b"a1 IDLE", Command("a1", "IDLE")),
    (b"a1 UNSELECT", Command("a1", "UNSELECT")),
    (b"a1 NAMESPACE", Command("a1", "NAMESPACE")),
    (b"a1 SEARCH ALL", Command("a1", "SEARCH", Search(sk.All()))),
    (b"a1 SEARCH RETURN () ALL", Command("a1", "SEARCH", Search(sk.All(), returns=frozenset({"ALL"})))),
    (
        b"a1 SEARCH RETURN (SAVE PARTIAL -1:-100) $",
        Command("a1", "SEARCH", Search(SeqKey(SeqSet((), saved=True)), None, False, frozenset({"SAVE", "PARTIAL"}), (-100, -1))),
    ),
    (b"a1 UID FETCH $ FLAGS", Command("a1", "UID FETCH", Fetch(SeqSet((), saved=True), (FetchAtt("FLAGS"),)))),
    (
        b"a1 UID SORT RETURN (COUNT) (REVERSE date Subject) US-ASCII UNSEEN",
        Command("a1", "UID SORT", Sort((("date", True), ("subject", False)), Search(sk.Flag(SEEN, False), "US-ASCII", False, frozenset({"COUNT"})))),
    ),
    (b"a1 THREAD references utf-8 ALL", Command("a1", "THREAD", Thread("references", Search(sk.All(), "UTF-8")))),
    # RFC 5267 §4.1: UPDATE and CONTEXT alone ask for ALL; with other options, only those
    (b"a1 UID SEARCH RETURN (UPDATE) ALL", Command("a1", "UID SEARCH", Search(sk.All(), returns=frozenset({"UPDATE", "ALL"})))),
    (b"a1 SEARCH RETURN (context) ALL", Command("a1", "SEARCH", Search(sk.All(), returns=frozenset({"CONTEXT", "ALL"})))),
    (b"a1 SEARCH RETURN (COUNT UPDATE) ALL", Command("a1", "SEARCH", Search(sk.All(), returns=frozenset({"COUNT", "UPDATE"})))),
    (
        b"a1 UID SORT RETURN (UPDATE CONTEXT) (ARRIVAL) UTF-8 ALL",
        Command("a1", "UID SORT", Sort((("arrival", False),), Search(sk.All(), "UTF-8", False, frozenset({"UPDATE", "CONTEXT", "ALL"})))),
    ),
    (b'a1 CANCELUPDATE "a1" "b\\\\2"', Command("a1", "CANCELUPDATE", CancelUpdate(("a1", "b\\2")))),
    (
        b"a1 UID SEARCH RETURN (MIN count) CHARSET UTF-8 ALL",
        Command("a1", "UID SEARCH", Search(sk.All(), "UTF-8", returns=frozenset({"MIN", "COUNT"}))),
    ),
    (
        b"a1 SEARCH CHARSET UTF-8 FROM {4}\r\nj\xc3\xb6e SINCE 1-Feb-2020 NOT SEEN",
        Command(
            "a1",
            "SEARCH",
            Search(
                sk.And(
                    (
                        sk.Address("from", "jöe"),
                        sk.Date("internal", "since", date(2020, 2, 1)),
                        sk.Not(sk.Flag(SEEN)),
                    )
                ),
                "UTF-8",
            ),
        ),
    ),
    (
        b"a1 UID SEARCH OR (SUBJECT x 1:3) UID 5:* NEW",
        Command(
            "a1",
            "UID SEARCH",
            Search(
                sk.And(
                    (
                        sk.Or(
                            sk.And((sk.Header("subject", "x"), SeqKey(SeqSet(((1, 3),))))),
                            UidKey(SeqSet(((5, 0),))),
                        ),
                        sk.And((RecentKey(True), sk.Flag(SEEN, False))),
                    )
                )
            ),
        ),
    ),
    (
        b'a1 SEARCH HEADER X-Spam "" LARGER 10 SMALLER 99 KEYWORD $Junk UNKEYWORD foo OLD SENTON "5-Mar-2021"',
        Command(
            "a1",
            "SEARCH",
            Search(
                sk.And(
                    (
                        sk.Header("x-spam", ""),
                        sk.Size("larger", 10),
                        sk.Size("smaller", 99),
                        sk.Flag("$Junk"),
                        sk.Flag("foo", False),
                        RecentKey(False),
                        sk.Date("sent", "on", date(2021, 3, 5)),
                    )
                )
            ),
        ),
    ),
    (b"a1 SEARCH MODSEQ 5", Command("a1", "SEARCH", Search(sk.ModSeq(5), None, True))),
    (
        b'a1 SEARCH BODY hello TEXT "x y"',
        Command("a1", "SEARCH", Search(sk.And((sk.Text("body", "hello"), sk.Text("text", "x y"))))),
    ),
    # RFC 8514 SAVEDATE, RFC 5182 SEARCHRES
    (
        b"a1 UID FETCH $ (UID SAVEDATE)",
        Command("a1", "UID FETCH", Fetch(SAVED, (FetchAtt("UID"), FetchAtt("SAVEDATE")))),
    ),
    (
        b"a1 SEARCH RETURN (SAVE MIN) SAVEDON 1-Feb-2020 $ UID $",
        Command(
            "a1",
            "SEARCH",
            Search(
                sk.And((sk.Date("saved", "on", date(2020, 2, 1)), SeqKey(SAVED), UidKey(SAVED))),
                returns=frozenset({"SAVE", "MIN"}),
            ),
        ),
    ),
    (b"a1 SEARCH SAVEDATESUPPORTED", Command("a1", "SEARCH", Search(sk.All()))),
    (b"a1 MOVE $ Trash", Command("a1", "MOVE", CopyMove(SAVED, "Trash"))),
    (  # CATENATE (RFC 4469), with MULTIAPPEND; TEXT takes a literal or literal8, URL an astring
        b'a1 APPEND Drafts (\\Draft) catenate (TEXT {2+}\r\nhi url "/INBOX/;UID=1" TEXT ~{1+}\r\n\x00)'
        b" {1+}\r\nz CATENATE (URL /INBOX/;UID=2)",
        Command("a1", "APPEND", Append("Drafts", (
            AppendItem(("\\Draft",), None, b"", (b"hi", CatUrl("/INBOX/;UID=1"), b"\x00")),
            AppendItem((), None, b"z"),
            AppendItem((), None, b"", (CatUrl("/INBOX/;UID=2"),)),
        ))),
    ),  # fmt: skip
    (b"a1 NOTIFY NONE", Command("a1", "NOTIFY", Notify(None))),
    (  # NOTIFY (RFC 5465): event names are kept as the RFC spells them, whatever the case written
        b"a1 NOTIFY SET STATUS (selected (messagenew (UID BODY.PEEK[HEADER]) MessageExpunge flagchange))"
        b' (SUBTREE (INBOX "A b") NONE) (mailboxes Junk (MailboxName Other))',
        Command("a1", "NOTIFY", Notify((
            NotifyGroup("SELECTED", frozenset(), ("MessageNew", "MessageExpunge", "FlagChange"),
                        (FetchAtt("UID"), FetchAtt("BODY[]", Section((), "HEADER"), peek=True))),
            NotifyGroup("SUBTREE", frozenset({"INBOX", "A b"})),
            NotifyGroup("MAILBOXES", frozenset({"Junk"}), ("MailboxName", "Other")),
        ), status=True)),
    ),  # fmt: skip
]


def frame_all(data: bytes, chunks: list[int] | None = None) -> list:
    """Feed `data` (in chunks of the given sizes) and collect the framer's output."""
    f = Framer(max_literal=1000)
    out = []
    pos = 0
    for n in chunks or [len(data)]:
        f.feed(data[pos : pos + n])
        pos += n
        while (item := f.next()) is not None:
            out.append(item)
    f.feed(data[pos:])
    while (item := f.next()) is not None:
        out.append(item)
    return out


@pytest.mark.parametrize("wire, expected", TABLE, ids=[t[0][:40].decode("latin-1") for t in TABLE])
def test_table(wire, expected):
    assert parse(wire) == expected


def test_table_through_the_framer_whole_and_in_random_chunks():
    stream = b"".join(wire + b"\r\n" for wire, _ in TABLE)
    rng = random.Random(1)
    for _ in range(30):
        sizes, left = [], len(stream)
        while left > 0:
            n = rng.randint(1, 40)
            sizes.append(n)
            left -= n
        commands = [parse(x) for x in frame_all(stream, sizes) if isinstance(x, bytes)]
        assert commands == [expected for _, expected in TABLE]


def test_sync_literal_asks_to_continue_and_literal_plus_does_not():
    assert frame_all(b"a1 LOGIN {5}\r\n") == [CONTINUE]
    assert frame_all(b"a1 LOGIN {5+}\r\nalice pw\r\n") == [b"a1 LOGIN {5+}\r\nalice pw"]


@pytest.mark.parametrize(
    "wire, error",
    [
        (b"a1 NOPE", "Unknown command"),
        (b"a1", "Missing command"),
        (b"+ NOOP", "Missing or invalid tag"),
        (b"a1 SELECT", "expected"),
        (b"a1 FETCH 0 FLAGS", "sequence number"),
        (b"a1 FETCH 1 (FLAGS", "expected"),
        (b"a1 FETCH 1 BODY[3.MIME", "expected"),
        (b"a1 FETCH 1 BODY[MIME]", "section text"),
        (b"a1 FETCH 1 FOO", "Unknown FETCH attribute"),
        (b"a1 STORE 1 +FLAGS (\\Recent)", "Invalid system flag"),
        (b"a1 STORE 1 +FLAGS (\\Bogus)", "Invalid system flag"),
        (b"a1 SEARCH FOO", "Unknown search key"),
        (b"a1 SEARCH RETURN (FIRST) ALL", "Unknown return option"),
        (b"a1 SEARCH RETURN (PARTIAL -1:5) ALL", "partial range"),
        (b"a1 SORT (SUBJECT REVERSE) UTF-8 ALL", "expected"),
        (b"a1 SORT (REVERSE COLOUR) UTF-8 ALL", "Unknown sort criterion"),
        (b"a1 SORT (" + b"DATE " * 20 + b"DATE) UTF-8 ALL", "Too many sort criteria"),
        (b"a1 THREAD REFERENCES", "expected"),
        (b"a1 FETCH $1 FLAGS", "expected"),
        (b"a1 SEARCH RETURN (MIN)", "expected"),
        (b"a1 CANCELUPDATE", "quoted tag expected"),
        (b"a1 CANCELUPDATE a1", "quoted string expected"),
        (b'a1 CANCELUPDATE "a1" ', "quoted string expected"),
        (b"a1 CANCELUPDATE" + b' "t"' * 65, "Too many tags"),
        (b"a1 SEARCH RETURN (UPDATE NOUPDATE) ALL", "Unknown return option"),
        (b"a1 SEARCH SINCE 31-Feb-2020", "valid date"),
        (b"a1 SELECT &Jjo (BOGUS)", "Unknown SELECT parameter"),  # a bad name does not hide bad syntax
        (b"a1 SELECT INBOX (QRESYNC (1 2) QRESYNC (1 2))", "Unknown SELECT parameter QRESYNC"),
        (b"a1 SELECT INBOX (QRESYNC (0 2))", "non-zero number"),
        (b"a1 SELECT INBOX (QRESYNC (1 9223372036854775808))", "number up to"),
        (b"a1 SELECT INBOX (QRESYNC (1 2 1:*))", "'*' is not allowed"),
        (b"a1 SELECT INBOX (QRESYNC (1 2 (1:3 *)))", "'*' is not allowed"),
        (b"a1 SELECT INBOX (QRESYNC (1 2 (1:3 1:2)))", "different numbers"),
        (b"a1 SELECT INBOX (QRESYNC (1 2 (1:3)))", "expected"),
        (b"a1 SELECT INBOX (QRESYNC (1))", "expected"),
        (b"a1 SELECT INBOX (QRESYNC (1 2 " + b"1," * MAX_SEQ_RANGES + b"1))", "Too many ranges"),
        (b"a1 UID FETCH 1 FLAGS (VANISHED)", "VANISHED needs CHANGEDSINCE"),
        (b"a1 UID FETCH 1 FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)", "Unknown FETCH modifier"),
        (b"a1 UID FETCH 1 FLAGS (CHANGEDSINCE 1 BOGUS)", "Unknown FETCH modifier"),
        (b"a1 LOGIN a b c", "end of command"),
        (b"a1 LOGIN {10}\r\nabc", "literal data"),
        (b"a1 STATUS INBOX (BOGUS)", "Unknown STATUS item"),
        (b'a1 ID ("a")', "ID takes"),
        (b"a1 SEARCH " + b"NOT " * 200 + b"ALL", "nested too deeply"),
        (b"a1 FETCH " + b"1," * MAX_SEQ_RANGES + b"1 FLAGS", "Too many ranges"),
        (b"a1 SEARCH " + b"ALL " * MAX_SEARCH_KEYS + b"ALL", "Too many search keys"),
        (b"a1 FETCH 1 (" + b"UID " * MAX_LIST_ITEMS + b"UID)", "Too many items"),
        (b"a1 FETCH 1 BODY[1" + b".1" * 100 + b"]", "nested too deeply"),
    ],
)
def test_bad_syntax(wire, error):
    with pytest.raises(ParseError) as info:
        parse(wire)
    assert error in info.value.text
    assert info.value.status == "BAD"


@pytest.mark.parametrize(
    "wire, code",
    [
        (b"a1 SELECT &Jjo", "NONEXISTENT"),
        (b"a1 EXAMINE a&AGE-b", "NONEXISTENT"),
        (b"a1 CREATE &ZeVnLIqe", "CANNOT"),
        (b"a1 RENAME a &Zev/LIqe-", "CANNOT"),
        (b"a1 RENAME & b", "NONEXISTENT"),
        (b"a1 STATUS & (MESSAGES)", "NONEXISTENT"),
        (b"a1 APPEND & {1+}\r\nx", "NONEXISTENT"),
        (b"a1 UID MOVE 1 &-&", "NONEXISTENT"),
        (b'a1 SELECT "\xff"', "NONEXISTENT"),
    ],
)
def test_a_name_that_is_not_modified_utf7_is_carried_for_a_no(wire, code):
    cmd = parse(wire)
    assert cmd.invalid_name is not None and cmd.invalid_name[1] == code
    assert cmd.invalid_name[0].startswith("Invalid mailbox name")
    assert parse(b"a1 SELECT &ZeVnLIqe-").invalid_name is None


def test_a_list_pattern_or_reference_that_is_not_modified_utf7_matches_nothing():
    assert parse(b'a1 LIST "" &Jjo').args.patterns == ()
    assert parse(b'a1 LIST "" (&Jjo INBOX)').args.patterns == ("INBOX",)
    assert parse(b"a1 LIST &Jjo *").args.patterns == ()
    assert parse(b'a1 LSUB "" a&AGE-*').args.patterns == ()
    assert parse(b"a1 LSUB & *").args.patterns == ()
    assert parse(b'a1 LSUB "" *').args.patterns == ("*",)


def test_rev2_names_are_utf8_and_recent_is_gone():
    """ENABLE IMAP4rev2 (RFC 9051 §5.1): the same bytes mean another name; \\Recent's grammar is BAD."""
    assert parse(b"a1 SELECT Entw&APw-rfe").args.mailbox == "Entwürfe"
    assert parse(b"a1 SELECT Entw&APw-rfe", rev2=True).args.mailbox == "Entw&APw-rfe"
    assert parse('a1 CREATE "Entwürfe"'.encode(), rev2=True).args.mailbox == "Entwürfe"
    assert parse(b'a1 LIST "" "Entw*"', rev2=True).args.patterns == ("Entw*",)
    assert parse(b"a1 SELECT inbox/x", rev2=True).args.mailbox == "INBOX/x"
    for bad in (b'a1 CREATE "\xff"', b"a1 CREATE {3}\r\na\tb", b'a1 CREATE "a\xc2\x85b"'):  # C1 NEL too
        assert parse(bad, rev2=True).invalid_name[1] == "CANNOT"
    assert parse(b'a1 LIST "" "\xc3("', rev2=True).args.patterns == ()
    for wire in (b"a1 SEARCH RECENT", b"a1 SEARCH NOT NEW", b"a1 SEARCH OLD", b"a1 STATUS INBOX (RECENT)",
                 b'a1 LIST "" * RETURN (STATUS (MESSAGES RECENT))'):  # fmt: skip
        parse(wire)
        with pytest.raises(ParseError):
            parse(wire, rev2=True)


def test_list_patterns_are_bounded():
    assert len(parse(b'a1 LIST "" (' + b" ".join(b"p%d" % i for i in range(64)) + b")").args.patterns) == 64
    with pytest.raises(ParseError, match="Too many LIST patterns"):
        parse(b'a1 LIST "" (' + b" ".join(b"p%d" % i for i in range(65)) + b")")


def test_unknown_charset_is_no_badcharset():
    with pytest.raises(ParseError) as info:
        parse(b"a1 SEARCH CHARSET KOI8-R TEXT x")
    assert (info.value.status, info.value.code) == ("NO", "BADCHARSET (UTF-8 US-ASCII)")


def test_line_too_long_is_skipped_up_to_its_end():
    f = Framer(max_line=100)
    f.feed(b"a1 NOOP " + b"x" * 150)
    assert f.next() is None
    f.feed(b"y" * 500)
    assert f.next() is None
    assert f.buffered == 0  # nothing of it is kept
    f.feed(b"\r\na2 NOOP\r\n")
    err = f.next()
    assert isinstance(err, FrameError) and (err.tag, err.status) == ("a1", "BAD") and not err.fatal
    assert f.next() == b"a2 NOOP"


def test_literal_too_big_is_refused_before_it_is_sent():
    f = Framer(max_literal=10, max_append=100)
    f.feed(b"a1 LOGIN {11}\r\n")
    err = f.next()
    assert isinstance(err, FrameError) and err.status == "BAD" and "TOOBIG" in err.text and not err.fatal
    f.feed(b"a2 APPEND INBOX {101}\r\n")
    err = f.next()
    assert isinstance(err, FrameError) and err.status == "NO" and "TOOBIG" in err.text
    f.feed(b"a3 APPEND INBOX {100}\r\n")
    assert f.next() is CONTINUE
    f.feed(b"a4 LOGIN {11+}\r\n")  # still the literal of a3: taken as data
    f.feed(b"x" * (100 - 16) + b"\r\n")
    assert f.next() == b"a3 APPEND INBOX {100}\r\n" + b"a4 LOGIN {11+}\r\n" + b"x" * 84
    f.feed(b"a5 LOGIN {11+}\r\n")
    err = f.next()
    assert isinstance(err, FrameError) and err.fatal  # the client sends it anyway: close


def test_empty_lines_are_ignored_and_bare_lf_accepted():
    assert frame_all(b"\r\n\na1 NOOP\n") == [b"a1 NOOP"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_junk_never_raises_anything_but_parse_error(data):
    f = Framer(max_line=80, max_literal=50)
    f.feed(data + b"\r\n")
    for _ in range(50):
        item = f.next()
        if item is None:
            break
        if isinstance(item, bytes):
            for rev2 in (False, True):
                try:
                    parse(item, rev2)
                except ParseError:
                    pass


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([b"SELECT", b"CREATE", b"RENAME x", b'LIST (SUBSCRIBED) ""', b"STATUS"]),
    st.binary(max_size=40),
)
def test_any_name_bytes_in_a_rev2_session_parse_or_fail_cleanly(command, name):
    """A rev2 client's names are UTF-8: any bytes give a Command (maybe with invalid_name) or ParseError."""
    tail = b" (MESSAGES)" if command == b"STATUS" else b""
    wire = b"a1 " + command + b" {%d+}\r\n" % len(name) + name + tail
    try:
        cmd = parse(wire, rev2=True)
    except ParseError:
        return
    if cmd.invalid_name is None and not command.startswith(b"LIST"):
        text = name.decode("utf-8")  # accepted: valid UTF-8 without control characters
        assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in text)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([w for w, _ in TABLE]), st.integers(0, 10_000))
def test_table_commands_cut_anywhere_still_parse_or_fail_cleanly(wire, cut):
    head = wire[: cut % (len(wire) + 1)]
    try:
        parse(head)
    except ParseError:
        pass
