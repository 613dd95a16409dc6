"""The framer cuts bytes into command lines, DATA bodies and BDAT chunks: a table of streams and the
pieces they give, replayed whole, byte by byte and in random chunks (the same pieces whatever the cut),
plus Hypothesis: nothing raises, nothing is lost or taken twice, the buffer stays bounded."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailflow_smtp_ingress.framing import TOO_LONG, Framer

LIMIT = 32  # command lines
BODY_LIMIT = 64


def take(framer: Framer, plan: list) -> list | None:
    """Take the pieces `plan` asks for, in order, as far as the input goes. A plan step is "line",
    "body", or ("chunk", n, keep). None when the next piece is still incomplete."""
    got = []
    for step in plan:
        if step == "line":
            piece = framer.line(LIMIT)
        elif step == "body":
            piece = framer.body(BODY_LIMIT)
        else:
            piece = framer.chunk(step[1], step[2])
        if piece is None:
            return None
        got.append(piece)
    return got


def replay(stream: bytes, plan: list, cuts: list[int]) -> list:
    """Feed `stream` cut at `cuts`; after each feed take as many of the planned pieces as are whole."""
    framer = Framer()
    got: list = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        framer.feed(stream[start:end])
        while len(got) < len(plan):
            piece = take(framer, [plan[len(got)]])
            if piece is None:
                break
            got += piece
    return got


TABLE = [
    # (stream, plan, pieces)
    (b"EHLO a\r\nNOOP\r\n", ["line", "line"], [b"EHLO a\r\n", b"NOOP\r\n"]),
    (b"NOOP\n", ["line"], [b"NOOP\n"]),  # a bare LF ends the line; the session refuses it
    (b"MAIL FROM:<a@b>\rRCPT\r\n", ["line"], [b"MAIL FROM:<a@b>\rRCPT\r\n"]),  # a CR alone does not
    (b"N" * 40 + b"\r\nNOOP\r\n", ["line", "line"], [TOO_LONG, b"NOOP\r\n"]),  # skipped, never held whole
    (b"N" * 30 + b"\r\n", ["line"], [b"N" * 30 + b"\r\n"]),  # exactly the limit
    (b"N" * 31 + b"\r\n", ["line"], [TOO_LONG]),
    (b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n", ["body", "line"], [(b"Subject: x\r\n\r\nhi\r\n", False), b"QUIT\r\n"]),
    (b".\r\nQUIT\r\n", ["body", "line"], [(b"", False), b"QUIT\r\n"]),  # the empty message
    (b"..x\r\n.\r\n", ["body"], [(b"..x\r\n", False)]),  # no unstuffing here
    (b"a\n.\nb\r\n.\r\n", ["body"], [(b"a\n.\nb\r\n", False)]),  # only <CRLF>.<CRLF> ends it
    (b"a\r\n.\nb\r\n.\r\n", ["body"], [(b"a\r\n.\nb\r\n", False)]),
    (b"a\r.\r\nb\r\n.\r\n", ["body"], [(b"a\r.\r\nb\r\n", False)]),
    (b"x" * 200 + b"\r\n.\r\nNOOP\r\n", ["body", "line"], [(b"", True), b"NOOP\r\n"]),  # too big, dropped
    (b"x" * 62 + b"\r\n.\r\n", ["body"], [(b"x" * 62 + b"\r\n", False)]),  # exactly the limit
    (b"x" * 63 + b"\r\n.\r\n", ["body"], [(b"", True)]),
    (b"abcdeBDAT", [("chunk", 5, True), "line"], None),  # the line is not whole yet
    (b"abcdeNOOP\r\n", [("chunk", 5, True), "line"], [b"abcde", b"NOOP\r\n"]),
    (b"abcdeNOOP\r\n", [("chunk", 5, False), "line"], [b"", b"NOOP\r\n"]),  # dropped as it comes
    (b"\r\n.\r\n\r\n.\r\n", [("chunk", 5, True), "body"], [b"\r\n.\r\n", (b"\r\n", False)]),  # BDAT is not DATA
    (b"", [("chunk", 0, True), ("chunk", 0, False)], [b"", b""]),
]


@pytest.mark.parametrize("stream, plan, pieces", TABLE)
def test_table_whole_byte_by_byte_and_in_random_chunks(stream, plan, pieces):
    expected = pieces if pieces is not None else []
    if pieces is None:  # incomplete on purpose: only what is whole comes out
        expected = replay(stream, plan, [])
        assert len(expected) < len(plan)
    assert replay(stream, plan, []) == expected
    assert replay(stream, plan, list(range(1, len(stream)))) == expected
    rng = random.Random(stream)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(0, 6)))) if stream else []
        assert replay(stream, plan, cuts) == expected


def test_an_endless_line_is_never_held_whole():
    f = Framer()
    for _ in range(1000):
        f.feed(b"y" * 1000)
        assert f.line(LIMIT) is None and len(f) <= 1000
    f.feed(b"tail\r\nNOOP\r\n")
    assert f.line(LIMIT) is TOO_LONG and f.line(LIMIT) == b"NOOP\r\n"


def test_an_endless_message_is_dropped_as_it_comes():
    f = Framer()
    for _ in range(1000):
        f.feed(b"z" * 1000)
        assert f.body(BODY_LIMIT) is None and len(f) <= 1000 + BODY_LIMIT + 4
    f.feed(b"\r\n.\r\nQUIT\r\n")
    assert f.body(BODY_LIMIT) == (b"", True) and f.line(LIMIT) == b"QUIT\r\n"


def test_discard_forgets_everything_begun():
    f = Framer()
    f.feed(b"x" * 100)
    assert f.line(LIMIT) is None  # skipping an over-long line
    f.feed(b"abc")
    assert f.discard() == 3
    f.feed(b"EHLO a\r\n")
    assert f.line(LIMIT) == b"EHLO a\r\n"


@given(
    st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"..", b"\r\n.\r\n", b"x" * 40, b"NOOP", b"\0"]), max_size=40),
    st.lists(st.integers(1, 50), max_size=10),
)
def test_lines_lose_nothing_and_take_nothing_twice(parts, cuts):
    stream = b"".join(parts)
    f = Framer()
    out = []
    pos = 0
    for n in [*cuts, len(stream)]:
        f.feed(stream[pos : pos + n])
        pos += n
        while (line := f.line(LIMIT)) is not None:
            out.append(line)
    f.feed(stream[pos:])
    while (line := f.line(LIMIT)) is not None:
        out.append(line)
    whole = [line for line in out if line is not TOO_LONG]
    assert all(line.endswith(b"\n") and b"\n" not in line[:-1] for line in whole)
    if TOO_LONG not in out and not f._skipping:  # nothing skipped: the lines and the rest are the stream
        assert b"".join(whole) + bytes(f.buf) == stream
