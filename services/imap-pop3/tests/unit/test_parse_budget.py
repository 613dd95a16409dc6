"""No IMAP command line costs the parser more than BOUND of CPU per 64 KiB (issue 12.2, 12.5): the
framer, the parser, mailbox names (modified UTF-7) and LIST patterns, fed the hostile shapes found
for each pattern and loop, and lines built by repeating random hostile fragments.

Time is the thread's CPU time, best of three, so a busy machine does not fail the test. Before the
fixes, 16,000 copies of `1:*` took 3 s and 1.1 GB in FETCH and a LIST pattern with 14 wildcards a
minute; the parser's own worst line costs a few ms now.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailflow_imap_pop3.imap.framing import Framer
from mailflow_imap_pop3.imap.lexer import ParseError
from mailflow_imap_pop3.imap.parser import parse
from mailflow_imap_pop3.imap.patterns import MailboxPattern
from tests.support import cpu_seconds

SIZE = 64 * 1024
BOUND = 0.1  # seconds of CPU for one command line of SIZE octets


def parse_quietly(line: bytes) -> None:
    try:
        parse(line)
    except ParseError:
        pass


def fill(head: bytes, unit: bytes, tail: bytes = b"") -> bytes:
    return head + unit * ((SIZE - len(head) - len(tail)) // len(unit)) + tail


HOSTILE = {
    "16,000 copies of 1:*": fill(b"a FETCH 1", b",1:*", b" FLAGS"),
    "scattered UIDs": b"a UID FETCH " + b",".join(b"%d" % i for i in range(1, 21_000, 2)) + b" FLAGS",
    "quoted backslashes": fill(b'a LOGIN "', b"\\\\", b'" x'),
    "unterminated quote": fill(b'a LOGIN "', b"\\\\"),
    "FETCH items": fill(b"a FETCH 1 (UID", b" BODY.PEEK[1.2.HEADER.FIELDS (A B)]<0.1>", b")"),
    "header field names": fill(b"a FETCH 1 BODY[HEADER.FIELDS (A", b" A", b")]"),
    "section part numbers": fill(b"a FETCH 1 BODY[1", b".1", b"]"),
    "store flags": fill(b"a STORE 1 FLAGS (x", b" \\Seen", b")"),
    "search keys": fill(b"a SEARCH ALL", b" ALL"),
    "search ORs": fill(b"a SEARCH", b" OR ALL", b" ALL"),
    "search parentheses": fill(b"a SEARCH ", b"("),
    "search strings": fill(b"a SEARCH", b' SUBJECT "x"'),
    "mailbox ampersands": fill(b"a SELECT ", b"&"),
    "mailbox shifts": fill(b"a SELECT ", b"&AGE-"),
    "long atom": fill(b"a SELECT ", b"a"),
    "list wildcards": fill(b'a LIST "" ', b"*%"),
    "ID pairs": fill(b"a ID (", b'"a" "b" ', b")"),
    "base64": fill(b"a AUTHENTICATE PLAIN ", b"QUFB"),
    "literal markers": fill(b"a LOGIN ", b"{1}"),
    "no command": fill(b"a", b" "),
}


@pytest.mark.parametrize("shape", HOSTILE)
def test_no_hostile_line_costs_more_than_the_bound(shape):
    line = HOSTILE[shape]
    assert 0.8 < len(line) / SIZE <= 1.0
    assert cpu_seconds(parse_quietly, line) < BOUND

    def framed() -> None:
        f = Framer()
        f.feed(line + b"\r\n")
        while f.next() is not None:
            pass

    assert cpu_seconds(framed) < BOUND


def test_a_hostile_list_pattern_against_many_long_names_costs_little():
    names = ["a" * 999 + "b", *("x" * 500 + "/" + "a" * 498 for _ in range(99))]
    pattern = MailboxPattern("*a" * 500 + "%b")
    assert cpu_seconds(lambda: [pattern.matches(n) for n in names]) < BOUND


FRAGMENTS = [
    b" ", b"(", b")", b"[", b"]", b"<", b">", b'"', b"\\", b"{1}", b"{1+}\r\n", b"~{", b"*", b"%", b":", b",",
    b"1", b"&", b"-", b"UID", b"OR", b"NOT", b"ALL", b"BODY[", b"HEADER.FIELDS", b".", b"\x00", b"\xff",
]  # fmt: skip
HEADS = [b"a FETCH ", b"a UID FETCH 1:* ", b"a SEARCH ", b"a STORE 1 FLAGS ", b"a LIST ", b"a LOGIN ", b"a "]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(HEADS), st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=6))
def test_property_repeated_hostile_fragments_cost_less_than_the_bound(head, motif):
    line = fill(head, b"".join(motif))
    assert cpu_seconds(parse_quietly, line) < BOUND
