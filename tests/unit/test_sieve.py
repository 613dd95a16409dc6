"""mailflow.sieve: a table of scripts x messages x expected deliveries, the glob matcher against a slow
reference, the checks `compile` makes, and the bounds."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailflow.sieve.interpret import MAX_ACTIONS, Envelope, Message, SieveRuntimeError, run
from mailflow.sieve.match import glob
from mailflow.sieve.script import MAX_NESTING, SieveError, compile

REQ = b'require ["fileinto", "imap4flags", "copy", "mailbox", "body", "envelope", "subaddress"];\n'

REPORT = (
    b"Return-Path: <robot@reports.example>\r\n"
    b"From: Report Robot <robot@Reports.Example>\r\n"
    b"To: Alice <alice+lists@example.test>, bob@example.test\r\n"
    b"Subject: =?utf-8?q?Weekly_r=C3=A9port?=\r\n"
    b"List-Id: <weekly.reports.example>\r\n"
    b"X-Spam: yes\r\n  folded\r\n"
    b"\r\n"
    b"The numbers are in.\r\nTotal: 42\r\n"
)
PLAIN = b"From: carol@elsewhere.test\r\nTo: alice@example.test\r\nSubject: lunch?\r\n\r\nSee you at noon.\r\n"
MIME = (
    b"From: carol@elsewhere.test\r\nSubject: pics\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"U2VjcmV0IHBsYW4=\r\n--b\r\nContent-Type: image/png\r\n\r\nPNGDATA\r\n--b--\r\n"
)
ENV = Envelope("robot@reports.example", "alice+lists@example.test")


def outcome(script: bytes, raw: bytes, mailboxes=("INBOX", "Lists")) -> list[tuple]:
    res = run(compile(REQ + script), Message(raw), ENV, frozenset(mailboxes))
    return [(d.mailbox, d.flags) + (("create",) if d.create else ()) for d in res.deliveries]


INBOX = [("INBOX", ())]
TABLE = [
    # (script, message, expected deliveries)
    (b"", REPORT, INBOX),  # implicit keep
    (b"keep;", REPORT, INBOX),
    (b"discard;", REPORT, []),
    (b'fileinto "Lists";', REPORT, [("Lists", ())]),
    (b'fileinto :copy "Lists";', REPORT, [("Lists", ()), ("INBOX", ())]),
    (b'fileinto "Lists"; fileinto "Lists";', REPORT, [("Lists", ())]),
    (b'fileinto :create "New/Box";', REPORT, [("New/Box", (), "create")]),
    (b'discard; keep;', REPORT, INBOX),
    (b'stop; fileinto "Lists";', REPORT, INBOX),
    (b'fileinto "Lists"; stop; keep;', REPORT, [("Lists", ())]),
    (b'if header :contains "subject" "WEEKLY r\xc3\xa9" { fileinto "Lists"; }', REPORT, [("Lists", ())]),  # RFC 2047 decoded
    (b'if header :contains "subject" "R\xc3\xa9PORT" { fileinto "Lists"; }', REPORT, [("Lists", ())]),  # ascii-casemap folds A-Z
    (b'if header :comparator "i;octet" :contains "subject" "Weekly" { fileinto "Lists"; }', REPORT, [("Lists", ())]),
    (b'if header :comparator "i;octet" :contains "subject" "weekly" { fileinto "Lists"; }', REPORT, INBOX),
    (b'if header :is "subject" "weekly r\xc3\xa9port" { fileinto "Lists"; }', REPORT, [("Lists", ())]),
    (b'if header :is "subject" "weekly" { fileinto "Lists"; }', REPORT, INBOX),
    (b'if header :matches "list-id" "<*.reports.example>" { fileinto "Lists"; }', REPORT, [("Lists", ())]),
    (b'if header :matches "subject" "Weekly r?port" { fileinto "Lists"; }', REPORT, [("Lists", ())]),
    (b'if header :is "x-spam" "yes folded" { discard; }', REPORT, []),  # unfolded
    (b'if address :domain :is "from" "reports.example" { fileinto "Lists"; }', REPORT, [("Lists", ())]),
    (b'if address :localpart :is "to" "bob" { fileinto "Lists"; }', REPORT, [("Lists", ())]),
    (b'if address :all :is "to" "alice+lists@example.test" { fileinto "Lists"; }', REPORT, [("Lists", ())]),
    (b'if address :all :is "from" "Report Robot" { fileinto "Lists"; }', REPORT, INBOX),  # the address, not the name
    (b'if envelope :domain :is "from" "reports.example" { fileinto "Lists"; }', REPORT, [("Lists", ())]),
    (b'if envelope :localpart :matches "to" "alice+*" { fileinto "Lists"; }', REPORT, [("Lists", ())]),
    (b'if envelope :detail :is "to" "lists" { fileinto "Lists"; }', REPORT, [("Lists", ())]),
    (b'if envelope :user :is "to" "alice" { fileinto "Lists"; }', REPORT, [("Lists", ())]),
    (b'if address :detail :matches "to" "*" { fileinto "Lists"; }', REPORT, [("Lists", ())]),  # alice+lists
    (b'if address :detail :matches "from" "*" { fileinto "Lists"; }', REPORT, INBOX),  # no "+": no detail
    (b'if address :user :is "to" "bob" { fileinto "Lists"; }', REPORT, [("Lists", ())]),
    (b'if exists ["list-id", "x-spam"] { fileinto "Lists"; }', REPORT, [("Lists", ())]),
    (b'if exists ["list-id", "x-nope"] { fileinto "Lists"; }', REPORT, INBOX),
    (b'if size :over 100 { fileinto "Lists"; }', REPORT, [("Lists", ())]),
    (b'if size :under 1K { fileinto "Lists"; }', REPORT, [("Lists", ())]),
    (b'if size :over 1M { fileinto "Lists"; }', REPORT, INBOX),
    (b'if allof (exists "list-id", not exists "x-nope") { fileinto "Lists"; }', REPORT, [("Lists", ())]),
    (b'if anyof (false, header :contains "subject" "lunch") { fileinto "Lists"; }', PLAIN, [("Lists", ())]),
    (b'if anyof (false, header :contains "subject" "lunch") { fileinto "Lists"; }', REPORT, INBOX),
    (b'if true { fileinto "Lists"; } else { discard; }', REPORT, [("Lists", ())]),
    (b'if false { fileinto "Lists"; } elsif true { discard; } else { keep; }', REPORT, []),
    (b'if body :text :contains "total: 42" { fileinto "Lists"; }', REPORT, [("Lists", ())]),
    (b'if body :contains "secret plan" { fileinto "Lists"; }', MIME, [("Lists", ())]),  # base64 decoded
    (b'if body :raw :contains "secret plan" { fileinto "Lists"; }', MIME, INBOX),  # :raw is not decoded
    (b'if body :text :contains "PNGDATA" { fileinto "Lists"; }', MIME, INBOX),  # not a text part
    (b'if mailboxexists "Lists" { fileinto "Lists"; }', REPORT, [("Lists", ())]),
    (b'if mailboxexists "Nope" { fileinto "Nope"; }', REPORT, INBOX),
    # imap4flags
    (b'addflag "\\\\Seen";', REPORT, [("INBOX", ("\\Seen",))]),
    (b'addflag ["\\\\flagged", "$Work urgent"]; removeflag "urgent"; keep;', REPORT, [("INBOX", ("\\Flagged", "$Work"))]),
    (b'setflag "a"; setflag "b"; fileinto "Lists";', REPORT, [("Lists", ("b",))]),
    (b'fileinto :flags "\\\\Seen" "Lists"; keep;', REPORT, [("Lists", ("\\Seen",)), ("INBOX", ())]),
    (b'addflag "x"; fileinto :copy "Lists"; removeflag "x";', REPORT, [("Lists", ("x",)), ("INBOX", ())]),
    (b'addflag "\\\\Recent \\\\Bogus ok";', REPORT, [("INBOX", ("ok",))]),  # \Recent and unknown system flags dropped
    (b'addflag "$Label1"; if hasflag :is "$label1" { fileinto "Lists"; }', REPORT, [("Lists", ("$Label1",))]),
    (b'if hasflag "x" { fileinto "Lists"; }', REPORT, INBOX),
]


@pytest.mark.parametrize(("script", "raw", "expected"), TABLE)
def test_table(script, raw, expected):
    assert outcome(script, raw) == expected


@pytest.mark.parametrize(
    ("script", "error"),
    [
        (b'require "notify";', "unsupported extension: notify"),
        (b'require ["vacation", "vacation-seconds"];', "unsupported extension: vacation-seconds"),
        (b'vacation "away";', "line 1: unknown command vacation"),  # without its require
        (b'require "editheader";', "unsupported extension: editheader"),
        (b'require "envelope"; if envelope :detail "to" "x" {keep;}', "line 1: extension 'subaddress' not loaded"),
        (b'redirect "not an address";', "redirect: 'not an address' is not an address"),
        (b'fileinto "x";', "line 1: unknown command fileinto"),  # fileinto without require
        (b'require "fileinto"; fileinto :copy "x";', "line 1: extension 'copy' not loaded"),
        (b'if header :is "a" "b" {', "line 1: parsing error: end of script reached while right_cbracket expected"),
        (b'require "body"; if body :content "text" :is "x" {keep;}', "body :content is not supported"),
        (b'require "imap4flags"; if hasflag "v" "x" {keep;}', "line 1: parsing error: string found while left_cbracket expected near '\"'"),
        (b'require "imap4flags"; addflag "v" "x";', "line 1: parsing error: unexpected token '\"x\"' found near '\"'"),
        (b"keep;" + b"#" * 70_000, "script larger than 65536 octets"),
        (b"\xff", "script is not UTF-8 (octet 0)"),
        (b'require "relational"; if header :count "gt" :comparator "i;ascii-numeric" "x" "1" {keep;}',
         'i;ascii-numeric needs require "comparator-i;ascii-numeric"'),
        (b'require "comparator-i;ascii-numeric"; if header :contains :comparator "i;ascii-numeric" "x" "1" {keep;}',
         "i;ascii-numeric cannot do :contains"),
        (b'require "relational"; if header :value "xx" "x" "1" {keep;}', "line 1: bad value \"xx\" for argument match-type"),
        (b'require "variables"; set "1a" "x";', "set: '1a' is not a variable name"),
        (b'require "variables"; set :lower :upper "a" "x";', "set: two modifiers of the same precedence"),
        (b'require "date"; if currentdate "fortnight" "1" {keep;}', "currentdate: unknown date part 'fortnight'"),
        (b'require "date"; if currentdate :zone "CET" "year" "1" {keep;}', "currentdate: bad zone 'CET' (+hhmm or -hhmm)"),
        (b'if header :count "gt" "x" "1" {keep;}', "line 1: extension 'relational' not loaded"),
        (b'set "a" "b";', "line 1: unknown command set"),
    ],
)
def test_compile_refuses(script, error):
    with pytest.raises(SieveError) as e:
        compile(script)
    assert str(e.value) == error


def test_text_strings_are_read_in_linear_time_and_may_hold_a_dollar():
    """sievelib's text: rule refused a "$" and backtracked over runs of line breaks (seconds for 60,000);
    ours reads line by line."""
    import time

    started = time.perf_counter()
    with pytest.raises(SieveError):  # never terminated: an error, at once
        compile(b'require "fileinto";\nif header :is "a" text:\n' + b"\n" * 60_000)
    assert compile(b'require "vacation";\nvacation text:\n' + b"\n" * 60_000 + b"bye\n.\n;").commands
    assert time.perf_counter() - started < 0.5
    got = compile(b'require "vacation";\nvacation text:\r\nIt costs $5.\r\n..and a dot\r\n.\r\n;').commands[0]
    assert got.reason == "It costs $5.\n.and a dot\n"  # lines end as one "\n"; ".." is a line's "."
    assert compile(b"keep;" + b"\r\n" * 64).commands


def test_nesting_and_action_bounds():
    deep = b"if true { " * (MAX_NESTING + 1) + b"keep;" + b" }" * (MAX_NESTING + 1)
    with pytest.raises(SieveError, match="nested deeper"):
        compile(deep)
    many = REQ + b"".join(b'fileinto :copy "F%d";' % i for i in range(MAX_ACTIONS + 1))
    with pytest.raises(SieveRuntimeError):
        run(compile(many), Message(REPORT), ENV)
    exactly = REQ + b"".join(b'fileinto :copy "F%d";' % i for i in range(MAX_ACTIONS))
    assert len(run(compile(exactly), Message(REPORT), ENV).deliveries) == MAX_ACTIONS + 1  # and the implicit keep


@pytest.mark.parametrize(
    ("text", "pattern", "expected"),
    [
        ("", "", True), ("", "*", True), ("a", "", False), ("abc", "a*c", True), ("abc", "a?c", True),
        ("ac", "a?c", False), ("abcbc", "*bc", True), ("abc", "*b", False), ("a*c", "a\\*c", True),
        ("abc", "a\\*c", False), ("a?c", "a\\?c", True), ("aXbXc", "*X*X*", True), ("aXb", "*X*X*", False),
        ("ab", "a*b*", True), ("abab", "a*b", True),
    ],
)  # fmt: skip
def test_glob(text, pattern, expected):
    assert (glob(text, pattern) is not None) is expected


@given(st.text("ab*?", max_size=8), st.text("ab", max_size=12))
def test_glob_agrees_with_fnmatch(pattern, text):
    assert (glob(text, pattern) is not None) == fnmatch.fnmatchcase(text, pattern.replace("[", "[[]"))


def test_glob_is_not_exponential():
    text = "a" * 50_000
    assert glob(text, "*a*a*a*a*a*a*a*a*b") is None  # leftmost pieces: one pass each, no backtracking


VARS = b'require ["fileinto", "variables", "relational", "comparator-i;ascii-numeric", "date", "envelope", "imap4flags"];\n'
LIST = (
    b"From: Dovecot list <dovecot-bounces@dovecot.org>\r\n"
    b"List-Id: Dovecot Mailing List <dovecot.dovecot.org>\r\n"
    b"Subject: [dovecot] 2.4 release\r\n"
    b"Date: Fri, 27 Nov 2026 23:30:00 -0800\r\n"
    b"Received: from a by b; Sat, 28 Nov 2026 07:30:05 +0000\r\n"
    b"Received: from c by d; Sat, 28 Nov 2026 07:30:01 +0000\r\n"
    b"X-Priority: 2\r\n"
    b"\r\nbody\r\n"
)
NOW = 1796000000.0  # 2026-11-29 ... UTC

MORE = [
    # variables: match variables, set and its modifiers, string
    (b'if header :matches "list-id" "*<*.*>" { fileinto "Lists/${2}"; }', [("Lists/dovecot", ())]),
    (b'if header :matches "subject" "[*] *" { set :upperfirst "l" "${1}"; fileinto "L-${l}"; }', [("L-Dovecot", ())]),
    (b'set "a" "x"; set "b" "${a}${a}${c}"; if string :is "${b}" "xx" { fileinto "yes"; }', [("yes", ())]),
    (b'set :length "n" "hello"; if string :is "${n}" "5" { fileinto "five"; }', [("five", ())]),
    (b'set :quotewildcard "q" "a*b"; if string :matches "a*b" "${q}" { fileinto "quoted"; }', [("quoted", ())]),
    (b'set :quotewildcard "q" "a*b"; if string :matches "axxb" "${q}" { fileinto "quoted"; }', INBOX),
    (b'set :lower :upperfirst "v" "hELLO"; fileinto "${v}";', [("Hello", ())]),
    (b'if string :is "${unknown}" "" { fileinto "empty"; }', [("empty", ())]),
    (b'if string :is "${a.b}" "${a.b}" { fileinto "literal"; }', [("literal", ())]),  # no namespace: text
    (b'set "f" "\\\\Flagged"; addflag "${f}";', [("INBOX", ("\\Flagged",))]),
    (b'if envelope :matches "from" "*@*" { fileinto "from-${2}"; }', [("from-reports.example", ())]),
    (b'if string :count "eq" :comparator "i;ascii-numeric" ["a", "", "b"] "2" { fileinto "two"; }', [("two", ())]),
    # relational
    (b'if header :count "ge" :comparator "i;ascii-numeric" "received" "2" { fileinto "hops"; }', [("hops", ())]),
    (b'if header :count "gt" :comparator "i;ascii-numeric" "received" "2" { fileinto "hops"; }', INBOX),
    (b'if header :value "lt" :comparator "i;ascii-numeric" "x-priority" "3" { fileinto "urgent"; }', [("urgent", ())]),
    (b'if header :value "gt" :comparator "i;ascii-numeric" "x-priority" "10" { fileinto "urgent"; }', INBOX),
    (b'if header :value "gt" "x-priority" "10" { fileinto "strings"; }', [("strings", ())]),  # "2" > "10" as text
    (b'if header :value "lt" :comparator "i;ascii-numeric" "subject" "99999" { fileinto "x"; }', INBOX),  # not a number: infinity
    (b'if address :count "eq" :comparator "i;ascii-numeric" "from" "1" { fileinto "one"; }', [("one", ())]),
    # date
    (b'if date "date" "date" "2026-11-28" { fileinto "utc"; }', [("utc", ())]),  # 23:30 -0800 is the 28th in UTC
    (b'if date :originalzone "date" "date" "2026-11-27" { fileinto "own"; }', [("own", ())]),
    (b'if date :zone "+0100" "date" "time" "08:30:00" { fileinto "cet"; }', [("cet", ())]),
    (b'if date :originalzone "date" "zone" "-0800" { fileinto "zone"; }', [("zone", ())]),
    (b'if date "date" "weekday" "6" { fileinto "saturday"; }', [("saturday", ())]),
    (b'if date "received" "second" "05" { fileinto "first-received"; }', [("first-received", ())]),
    (b'if date "x-missing" "year" "2026" { fileinto "no"; }', INBOX),
    (b'if date :value "ge" :originalzone "date" "hour" "09" { fileinto "late"; }', [("late", ())]),
    (b'if currentdate "year" "2026" { fileinto "now"; }', [("now", ())]),
    (b'if currentdate :value "gt" "date" "2026-11-28" { fileinto "after"; }', [("after", ())]),
    (b'if date "date" "julian" "61372" { fileinto "mjd"; }', [("mjd", ())]),
    (b'if date "date" "iso8601" "2026-11-28T07:30:00+00:00" { fileinto "iso"; }', [("iso", ())]),
    (b'if date "date" "std11" "Sat, 28 Nov 2026 07:30:00 +0000" { fileinto "std11"; }', [("std11", ())]),
]


@pytest.mark.parametrize(("script", "expected"), MORE)
def test_variables_relational_date(script, expected):
    res = run(compile(VARS + script), Message(LIST), ENV, frozenset(), NOW)
    assert [(d.mailbox, d.flags) for d in res.deliveries] == expected


def test_variables_are_bounded():
    many = VARS + b"".join(b'set "v%d" "x";' % i for i in range(200))
    with pytest.raises(SieveRuntimeError, match="more than 128 variables"):
        run(compile(many), Message(LIST), ENV)
    big = VARS + b'set "a" "' + b"x" * 4000 + b'"; fileinto "' + b"${a}" * 17 + b'";'  # 68000 characters
    with pytest.raises(SieveRuntimeError, match="once expanded"):
        run(compile(big), Message(LIST), ENV)


def test_match_variables_of_wildcards_in_order():
    from mailflow.sieve.match import matches

    assert matches("Dovecot Mailing List <dovecot@dovecot.org>", "*<*@*", "i;ascii-casemap") == [
        "Dovecot Mailing List <dovecot@dovecot.org>", "Dovecot Mailing List ", "dovecot", "dovecot.org>",
    ]
    assert matches("ABCDE", "a?c*e", "i;ascii-casemap") == ["ABCDE", "B", "D"]
    assert matches("abc", "x*", "i;octet") is None


LIB = {
    "lists": b'require ["fileinto", "variables", "include", "imap4flags"]; set "x" "lib"; if exists "list-id" { fileinto "Lists"; return; } addflag "not-here";',
    "flagger": b'require "imap4flags"; addflag "$Included";',
    "stopper": b"stop;",
    "loop": b'require "include"; include "loop";',
    "broken": b"if {",
}


def library() -> dict:
    out = {}
    for n, data in LIB.items():
        try:
            out[n] = compile(data)
        except SieveError as exc:
            out[n] = exc
    return out


INC = b'require ["include", "fileinto", "imap4flags", "variables"];\n'
INCLUDES = [
    (b'include "lists"; fileinto "after";', [("Lists", ()), ("after", ())]),  # return ends only "lists"
    (b'set "x" "main"; include "lists"; if string :is "${x}" "main" { fileinto "own-vars"; }', [("Lists", ()), ("own-vars", ())]),
    (b'include :personal "flagger"; keep;', [("INBOX", ("$Included",))]),
    (b'include :once "flagger"; removeflag "$Included"; include :once "flagger";', INBOX),  # the second is skipped
    (b'include "stopper"; fileinto "never";', INBOX),  # stop in an included script ends everything
    (b'include :optional "nope"; fileinto "went-on";', [("went-on", ())]),
    (b'return; fileinto "never";', INBOX),  # return in the main script is stop
]


@pytest.mark.parametrize(("script", "expected"), INCLUDES)
def test_include(script, expected):
    res = run(compile(INC + script), Message(LIST), ENV, frozenset(), NOW, library(), "main")
    assert [(d.mailbox, d.flags) for d in res.deliveries] == expected


@pytest.mark.parametrize(
    ("script", "error"),
    [
        (b'include "nope";', "included script 'nope' does not exist"),
        (b'include "loop";', "include loop through 'loop'"),
        (b'include "main";', "include loop through 'main'"),
        (b'include "broken";', "included script 'broken': line 1"),
    ],
)
def test_include_failures_fail_the_script(script, error):
    with pytest.raises(SieveRuntimeError, match=error):
        run(compile(INC + script), Message(LIST), ENV, frozenset(), NOW, library(), "main")


def test_include_global_is_refused():
    with pytest.raises(SieveError, match="no global scripts"):
        compile(b'require "include"; include :global "x";')
    with pytest.raises(SieveError, match="unknown command global"):
        compile(b'require ["include", "variables"]; global "x";')


def test_a_script_cannot_make_one_message_cost_unbounded_cpu():
    import time

    body = b"From: a@b.example\r\nSubject: x\r\n\r\n" + b"a" * (3 * 1024 * 1024)
    started = time.perf_counter()
    many = REQ + b'if body :raw :contains [' + b",".join(b'"zz%d"' % i for i in range(2000)) + b'] { discard; }'
    with pytest.raises(SieveRuntimeError, match="too much of the message"):
        run(compile(many), Message(body), ENV)
    slow = REQ + b'if body :raw :matches "*' + b"?a" * 2000 + b'b*" { discard; }'
    with pytest.raises(SieveRuntimeError, match="too much of the message"):
        run(compile(slow), Message(body), ENV)
    assert time.perf_counter() - started < 5


SEND = b'require ["fileinto", "reject", "ereject", "vacation", "copy", "variables"];\n'
SENDS = [
    # (script, deliveries, redirects, reject, vacation reason)
    (b'redirect "bob@else.example";', [], ["bob@else.example"], None, None),
    (b'redirect :copy "bob@else.example";', INBOX, ["bob@else.example"], None, None),
    (b'redirect "b@x.example"; redirect "B@x.example"; redirect "c@x.example";', [], ["b@x.example", "c@x.example"], None, None),
    (b'set "to" "dave"; redirect "${to}@x.example";', [], ["dave@x.example"], None, None),
    (b'reject "no thanks";', [], [], "no thanks", None),
    (b'ereject "no";', [], [], "no", None),
    (b'vacation :days 3 "away";', INBOX, [], None, "away"),
    (b'vacation "away"; fileinto "Lists";', [("Lists", ())], [], None, "away"),
    (b'discard;', [], [], None, None),
]


@pytest.mark.parametrize(("script", "deliveries", "redirects", "reject", "vacation"), SENDS)
def test_send_actions(script, deliveries, redirects, reject, vacation):
    res = run(compile(SEND + script), Message(REPORT), ENV)
    assert [(d.mailbox, d.flags) for d in res.deliveries] == deliveries
    assert res.redirects == redirects and res.reject == reject
    assert (res.vacation.reason if res.vacation else None) == vacation
    assert res.discarded is (not deliveries and not redirects and reject is None)


@pytest.mark.parametrize(
    ("script", "error"),
    [
        (b'reject "a"; keep;', "reject cannot go with keep"),
        (b'reject "a"; redirect "b@x.example";', "reject cannot go with"),
        (b'reject "a"; vacation "b";', "reject cannot go with"),
        (b'reject "a"; ereject "b";', "more than one reject"),
        (b'vacation "a"; vacation "b";', "more than one vacation"),
        (b''.join(b'redirect "r%d@x.example";' % i for i in range(5)), "more than 4 redirects"),
        (b'set "to" "nobody"; redirect "${to}";', "not an address"),
    ],
)
def test_send_action_errors(script, error):
    with pytest.raises(SieveRuntimeError, match=error):
        run(compile(SEND + script), Message(REPORT), ENV)


def test_vacation_reply_rules():
    from mailflow.sieve.replies import vacation_applies, vacation_reply
    from mailflow.sieve.script import Vacation

    v = Vacation("I am away.")
    to_alice = b"From: carol@elsewhere.test\r\nTo: Alice <alice@example.test>\r\nSubject: hi\r\nMessage-ID: <m1@e>\r\n"
    env = Envelope("carol@elsewhere.test", "alice@example.test")

    def applies(head: bytes, envelope=env, vac=v) -> bool:
        return vacation_applies(vac, Message(head + b"\r\nbody\r\n"), envelope, "alice@example.test")

    assert applies(to_alice)
    assert not applies(to_alice, Envelope("", "alice@example.test"))  # null sender
    for sender in ("MAILER-DAEMON@x.example", "owner-list@x.example", "list-request@x.example", "listserv@x.example"):
        assert not applies(to_alice, Envelope(sender, "alice@example.test")), sender
    assert not applies(to_alice + b"Auto-Submitted: auto-replied\r\n")
    assert applies(to_alice + b"Auto-Submitted: no\r\n")
    assert not applies(to_alice + b"Precedence: bulk\r\n")
    assert not applies(to_alice + b"List-Id: <x.example>\r\n")
    assert not applies(to_alice, Envelope("alice@example.test", "alice@example.test"))  # herself
    bcc = b"From: carol@elsewhere.test\r\nTo: team@example.test\r\n"
    assert not applies(bcc)  # not addressed to her by name
    assert applies(bcc, vac=Vacation("away", addresses=("team@example.test",)))
    reply = vacation_reply(v, Message(to_alice + b"\r\nx\r\n"), env, "alice@example.test", "mx.example.test", 0.0)
    assert b"\r\nTo: carol@elsewhere.test\r\n" in reply and b"\r\nSubject: Auto: hi\r\n" in reply
    assert b"\r\nIn-Reply-To: <m1@e>\r\n" in reply and b"\r\nAuto-Submitted: auto-replied (vacation)\r\n" in reply
    assert reply.endswith(b"\r\n\r\nI am away.\r\n")


def test_rejection_and_redirected_copy():
    from mailflow.sieve.replies import hops, redirected, rejection

    raw = b"Return-Path: <carol@elsewhere.test>\r\nReceived: from a\r\nSubject: x\r\nMessage-ID: <m@e>\r\n\r\nbody\r\n"
    env = Envelope("carol@elsewhere.test", "alice@example.test")
    mdn = rejection(Message(raw), env, "no thanks", "alice@example.test", "mx.example.test", 0.0, "k" * 64)
    assert b"Content-Type: multipart/report; report-type=disposition-notification;" in mdn
    assert b"Disposition: automatic-action/MDN-sent-automatically; deleted" in mdn and b"no thanks" in mdn
    assert rejection(Message(raw), Envelope("", "alice@example.test"), "x", "a@b.example", "h", 0.0, "k") is None
    copy = redirected(raw, "mx.example.test", "bob@else.example", 0.0)
    assert copy.startswith(b"Received: by mx.example.test (Mailflow Sieve redirect)\r\n\tfor <bob@else.example>;")
    assert copy.endswith(raw[len(b"Return-Path: <carol@elsewhere.test>\r\n"):]) and hops(copy) == 2
