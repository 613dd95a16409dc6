"""ManageSieve framing and arguments (RFC 5804 §4): a table of inputs, replayed whole and in random chunks."""

from __future__ import annotations

import random

import pytest

from mailflow_imap_pop3.managesieve.parser import Command, FrameError, Framer, ParseError

CASES = [
    (b"CAPABILITY\r\n", Command("CAPABILITY", [], [])),
    (b"logout\r\n", Command("LOGOUT", [], [])),
    (b'HAVESPACE "my script" 1234\r\n', Command("HAVESPACE", [b"my script", b"1234"], [False, True])),
    (b'PUTSCRIPT "a" {5+}\r\nkeep;\r\n', Command("PUTSCRIPT", [b"a", b"keep;"], [False, False])),
    (b'PUTSCRIPT {1+}\r\na {3}\r\nx\r\n\r\n', Command("PUTSCRIPT", [b"a", b"x\r\n"], [False, False])),
    (b'NOOP "q\\"uo\\\\te"\r\n', Command("NOOP", [b'q"uo\\te'], [False])),
    (b'"dGVzdA=="\r\n', Command("", [b"dGVzdA=="], [False])),
    (b"\r\nNOOP\n", Command("NOOP", [], [])),
]


@pytest.mark.parametrize(("data", "expected"), CASES)
def test_whole_and_in_chunks(data, expected):
    for seed in range(20):
        f = Framer()
        rnd = random.Random(seed)
        got, i = None, 0
        while i < len(data):
            n = rnd.randint(1, 4) if seed else len(data)
            f.feed(data[i : i + n])
            i += n
            item = f.next()
            if item is not None:
                assert got is None
                got = item
        assert got == expected


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b'NOOP "open\r\n', "unterminated quoted string"),
        (b'NOOP "bad \\x"\r\n', "bad escape in a quoted string"),
        (b"NOOP (x)\r\n", "unexpected character"),
        (b'NOOP "' + b"x" * 1025 + b'"\r\n', "quoted string longer than 1024 octets (send a literal)"),
    ],
)
def test_parse_errors_are_answered_and_the_session_goes_on(data, error):
    f = Framer(max_line=4096)
    f.feed(data + b"NOOP\r\n")
    item = f.next()
    assert isinstance(item, ParseError) and str(item) == error
    assert f.next() == Command("NOOP", [], [])


def test_limits():
    f = Framer(max_line=100, max_literal=10)
    f.feed(b"NOOP " + b"x" * 200 + b"\r\nNOOP\r\n")
    assert f.next() == FrameError("line too long")
    assert f.next() == Command("NOOP", [], [])
    f.feed(b'PUTSCRIPT "a" {11+}\r\n')
    assert f.next() == FrameError("literal too big (the limit is 10 octets)", fatal=True)
    f = Framer(max_line=100, max_literal=10)
    f.feed(b"X" + b" 1" * 20 + b"\r\n")
    assert f.next() == FrameError("too many arguments", fatal=True)
    f = Framer(max_line=100, max_literal=10)
    f.feed(b"N" * 150)  # no line end at all: nothing is kept past the limit
    assert f.next() is None and len(f._buf) == 0
