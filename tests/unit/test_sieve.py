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
        (b'require "vacation"; vacation "away";', "unsupported extension: vacation"),
        (b'require ["reject"];', "unsupported extension: reject"),
        (b'require "ereject";', "unsupported extension: ereject"),
        (b'require "envelope"; if envelope :detail "to" "x" {keep;}', "line 1: extension 'subaddress' not loaded"),
        (b'redirect "a@b.example";', "redirect is not supported"),
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


def test_a_run_of_line_breaks_is_refused_before_sievelib_backtracks_over_it():
    import time

    started = time.perf_counter()
    with pytest.raises(SieveError, match="line-break characters in a row"):
        compile(b'require "fileinto";\nif header :is "a" text:\n' + b"\n" * 60_000)
    assert time.perf_counter() - started < 0.5  # sievelib would take seconds
    assert compile(b"keep;" + b"\r\n" * 64).commands  # 64 empty lines are fine


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
