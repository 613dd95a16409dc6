"""The load tools' pure parts: the test message, percentiles, dot-stuffing, and the clients' readers
replayed from transcripts (a StreamReader fed the server's bytes, whole and in small chunks)."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.bench.load.clients import ImapClient, Pop3Client, ReplyError, wire
from tests.bench.load.harness import bench_message, loopback_host, percentile


@pytest.mark.parametrize("size", [4096, 1000, 300, 290, 289, 288, 201, 50])
def test_bench_message_is_exactly_the_size_asked_for_and_well_formed(size):
    m = bench_message(size, "user1@bench.test", "tok-1")
    head = m.split(b"\r\n\r\n", 1)[0]
    assert len(m) == max(size, len(head) + 4)
    assert m.endswith(b"\r\n") and b"\n" not in m.replace(b"\r\n", b"")
    assert not any(line.startswith(b".") for line in m.split(b"\r\n"))
    assert b"\r\nX-Bench-Id: tok-1\r\n" in m and b"Message-ID: <tok-1@loadgen.test>" in m


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    random.shuffle(values)
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_wire_doubles_leading_dots_and_ends_data():
    assert wire(b".a\r\nb\r\n.\r\n") == b"..a\r\nb\r\n..\r\n.\r\n"
    assert wire(b"no end") == b"no end\r\n.\r\n"


@pytest.mark.parametrize("text", ["10.0.0.1", "example.com", "0.0.0.0", "192.168.1.1", "::"])
def test_non_loopback_targets_are_refused(text):
    with pytest.raises(Exception, match="loopback"):
        loopback_host(text)


def test_loopback_targets_pass():
    assert loopback_host("localhost") == "127.0.0.1"
    assert loopback_host("127.0.0.5") == "127.0.0.5"
    assert loopback_host("::1") == "::1"


class Sent:
    def __init__(self):
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        pass


async def replay(server: bytes, chunked: bool):
    reader = asyncio.StreamReader(limit=1 << 20)
    if chunked:
        i = 0
        while i < len(server):
            n = random.randint(1, 7)
            reader.feed_data(server[i : i + n])
            i += n
    else:
        reader.feed_data(server)
    reader.feed_eof()
    return reader, Sent()


@pytest.mark.parametrize("chunked", [False, True])
async def test_imap_search_answer_before_the_noop_completion_still_counts(chunked):
    """Dovecot answers pipelined NOOP + SEARCH interleaved: the SEARCH result can come before the
    NOOP's completion. The poll must see it (the first version of e2e_latency dropped it with the
    NOOP's responses and measured 2-5 times the real latency against Dovecot)."""
    reader, sent = await replay(
        b"* SEARCH 1018\r\n* 1018 EXISTS\r\nt1 OK NOOP done\r\nt2 OK Search done\r\n", chunked
    )
    imap = ImapClient(reader, sent, 5)
    noop, search = imap.send("NOOP"), imap.send("UID SEARCH HEADER X-Bench-Id tok")
    assert sent.data == b"t1 NOOP\r\nt2 UID SEARCH HEADER X-Bench-Id tok\r\n"
    assert await imap.finish(noop, search) == [b"* SEARCH 1018\r\n", b"* 1018 EXISTS\r\n"]


async def test_e2e_poll_sees_a_search_result_that_precedes_the_noop_completion():
    import argparse
    import time

    from tests.bench.load.e2e_latency import visible_by_polling

    reader, sent = await replay(b"* SEARCH 7\r\nt1 OK NOOP done\r\nt2 OK Search done\r\n", chunked=False)
    options = argparse.Namespace(op_timeout=5, interval=0.002)
    assert await visible_by_polling(ImapClient(reader, sent, 5), "tok", time.perf_counter(), options)
    assert sent.data == b't1 NOOP\r\nt2 UID SEARCH HEADER X-Bench-Id "tok"\r\n'


@pytest.mark.parametrize("chunked", [False, True])
async def test_imap_literals_are_read_whole_and_a_no_is_an_error(chunked):
    body = b"Subject: x\r\n\r\nline } with brace {3}\r\n"
    server = b"* 1 FETCH (BODY[] {%d}\r\n%s)\r\nt1 OK done\r\nt2 NO [AUTHENTICATIONFAILED] no\r\n" % (
        len(body),
        body,
    )
    reader, sent = await replay(server, chunked)
    imap = ImapClient(reader, sent, 5)
    assert await imap.command("FETCH 1:* (BODY.PEEK[])") == [
        b"* 1 FETCH (BODY[] {%d}\r\n%s)\r\n" % (len(body), body)
    ]
    with pytest.raises(ReplyError, match="AUTHENTICATIONFAILED"):
        await imap.command("LOGIN a b")


@pytest.mark.parametrize("chunked", [False, True])
async def test_pop3_multiline_ends_only_at_a_lone_dot_line(chunked):
    message = b"a.\r\n..\r\nb.\r\n"  # lines ending in '.', and a stuffed lone dot
    server = b"+OK\r\n" + message + b".\r\n+OK\r\n.\r\n+OK\r\nx\r\n.\r\n-ERR no such message\r\n"
    reader, sent = await replay(server, chunked)
    pop3 = Pop3Client(reader, sent, 5)
    assert await pop3.multiline("RETR 1") == message
    assert await pop3.multiline("LIST") == b""
    assert await pop3.multiline("RETR 2") == b"x\r\n"
    with pytest.raises(ReplyError, match="no such message"):
        await pop3.multiline("RETR 3")
