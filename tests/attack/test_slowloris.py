"""Slowloris (issue 12, "Resource limits"): a client that dribbles one byte at a time into a command
line, an IMAP literal or an SMTP message is cut at its input deadline on every listener, and one that
keeps sending whole commands without logging in is cut at the session's lifetime; meanwhile a normal
client is served within a second.

The stack runs with short deadlines (the defaults are minutes: RFC 5321 §4.5.3.2.7, RFC 3501 §5.4)
so the test sees them pass: a piece of input must be in within TIMEOUT of the reply before it (plus a
second per 500 octets, nothing for a dribble), and a session that has not logged in lasts LIFETIME.
"""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest

from mailflow.stack import Ports, Stack
from tests.attack.clients import PROBES, add_alice
from tests.support.drip import dribble

pytestmark = [pytest.mark.attack, pytest.mark.timeout(300)]

TIMEOUT = 3.0  # before login (SMTP: always)
LOGGED_IN_TIMEOUT = 4.0
LIFETIME = 8.0
SLACK = 3.0  # the deadline's timer, and a loaded 2-core machine
DRIP_S = 0.5
PROBE_LIMIT_S = 1.0

ENV = {
    "MAILFLOW_SMTP_IDLE_TIMEOUT": str(TIMEOUT),
    "MAILFLOW_SMTP_SESSION_LIFETIME": str(LIFETIME),
    "MAILFLOW_IMAP_PREAUTH_TIMEOUT": str(TIMEOUT),
    "MAILFLOW_IMAP_LOGIN_TIMEOUT": str(LIFETIME),
    "MAILFLOW_IMAP_IDLE_TIMEOUT": str(LOGGED_IN_TIMEOUT),
    "MAILFLOW_IMAP_POP3_TIMEOUT": str(LOGGED_IN_TIMEOUT),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    st = Stack(tmp_path_factory.mktemp("slowloris"), Ports.free(), env=ENV).start()
    try:
        add_alice(st)
        yield st
    finally:
        st.stop()


def unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


TLS_LISTENERS = {"smtps", "imaps", "pop3s"}


async def connect(st: Stack, listener: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    tls = unverified() if listener in TLS_LISTENERS else None
    reader, writer = await asyncio.open_connection(st.ports.host, getattr(st.ports, listener), ssl=tls)
    greeting = await asyncio.wait_for(reader.readline(), 10)
    assert greeting[:3] in (b"220", b"* O", b"+OK"), greeting
    return reader, writer


async def say(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes, until: bytes) -> None:
    """Send a command and read replies up to the line that starts with `until`."""
    writer.write(line + b"\r\n")
    while not (reply := await asyncio.wait_for(reader.readline(), 10)).startswith(until):
        assert reply, f"closed before {until!r}"


FAMILY = {
    "smtp": "smtp",
    "submission": "smtp",
    "smtps": "smtp",
    "imap": "imap",
    "imaps": "imap",
    "pop3": "pop3",
    "pop3s": "pop3",
}
CUT = {"smtp": b"421 4.4.2", "imap": b"* BYE", "pop3": b"-ERR"}


async def while_dribbling(st: Stack, listener: str, cut: asyncio.Future) -> float:
    """A normal client of the listener's protocol, a second into the dribble: how long it took."""
    await asyncio.sleep(1.0)
    assert not cut.done()
    started = time.monotonic()
    await asyncio.to_thread(PROBES[FAMILY[listener]], st)
    return time.monotonic() - started


async def check_cut(st: Stack, listener: str, dribbler, deadline: float) -> None:
    cut = asyncio.ensure_future(dribbler)
    probe = await while_dribbling(st, listener, cut)
    took, last = await asyncio.wait_for(cut, deadline + 30)
    print(
        f"\n{listener}: dribbler cut after {took:.1f} s with {last[:60]!r}; a normal client took {probe * 1000:.0f} ms"
    )
    assert last.startswith(CUT[FAMILY[listener]]), last
    assert deadline <= took < deadline + SLACK
    assert probe <= PROBE_LIMIT_S


# --- a command line that never ends, on every listener ------------------------------------------------------

START = {
    "smtp": b"EHLO slow.example.test and on ",
    "imap": b"a1 LOGIN alice",
    "pop3": b"USER alice@example.test and on ",
}


@pytest.mark.parametrize("listener", ["smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s"])
async def test_a_dribbled_command_line_is_cut_at_its_deadline(stack, listener):
    reader, writer = await connect(stack, listener)
    await check_cut(stack, listener, dribble(reader, writer, START[FAMILY[listener]], DRIP_S), TIMEOUT)


# --- a message, a literal ---------------------------------------------------------------------------------


async def test_a_dribbled_smtp_message_is_cut_at_its_deadline(stack):
    reader, writer = await connect(stack, "smtp")
    await say(reader, writer, b"EHLO slow.example.test", b"250 ")
    await say(reader, writer, b"MAIL FROM:<slow@elsewhere.test>", b"250 ")
    await say(reader, writer, b"RCPT TO:<alice@example.test>", b"250 ")
    await say(reader, writer, b"DATA", b"354 ")
    await check_cut(stack, "smtp", dribble(reader, writer, b"Subject: slow\r\n\r\n", DRIP_S), TIMEOUT)


@pytest.mark.parametrize("listener", ["imap", "imaps"])
async def test_a_dribbled_imap_literal_is_cut_before_login(stack, listener):
    reader, writer = await connect(stack, listener)
    await check_cut(stack, listener, dribble(reader, writer, b"a1 LOGIN {4000+}\r\n", DRIP_S), TIMEOUT)


async def test_a_dribbled_append_literal_is_cut_after_login_too(stack):
    reader, writer = await connect(stack, "imap")
    await say(reader, writer, b"a1 LOGIN alice@example.test alice-pw", b"a1 OK")
    await check_cut(
        stack, "imap", dribble(reader, writer, b"a2 APPEND INBOX {100000+}\r\n", DRIP_S), LOGGED_IN_TIMEOUT
    )


# --- whole commands, never logging in: the lifetime ----------------------------------------------------------

KEEP_BUSY = {"smtp": b"NOOP\r\n", "imap": b"a NOOP\r\n", "pop3": b"CAPA\r\n"}


@pytest.mark.parametrize("listener", ["smtp", "imap", "pop3"])
async def test_a_session_that_never_logs_in_ends_at_its_lifetime(stack, listener):
    """A whole command every second, each well within its deadline: the session still ends at LIFETIME."""
    reader, writer = await connect(stack, listener)
    await check_cut(stack, listener, dribble(reader, writer, b"", 1.0, KEEP_BUSY[listener]), LIFETIME - 1.0)
