"""RFC 2920: the replies to a pipelined group leave in one write, and the session reads on only when
it has answered everything it was sent. A session over a transport that records its writes."""

from __future__ import annotations

import asyncio

from mailflow_smtp_ingress.directory import CachedDirectory
from mailflow_smtp_ingress.handler import IngressHandler
from mailflow_smtp_ingress.server import SmtpServer
from mailflow_smtp_ingress.session import Session
from tests.support.doubles import MemoryQueue


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name, default=None):
        return default

    def write(self, data) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def waiting(session: Session) -> None:
    """Until the session waits for input again (a fresh wait, not the one just woken)."""
    for _ in range(1000):
        await asyncio.sleep(0)
        w = session.conn.waiter
        if (w is not None and not w.done()) or session.task.done():
            return
    raise AssertionError("the session never waited for input")


async def test_a_pipelined_group_is_answered_in_one_write(settings_factory, directory):
    settings = settings_factory()
    queue = MemoryQueue()
    cached = CachedDirectory(directory)
    for rcpt in ("alice", "nobody", "bob"):  # answered from the cache: no store round trip between the replies
        await cached.resolve(f"{rcpt}@example.test")
    server = SmtpServer(settings, IngressHandler(settings, cached, queue), None)
    session = Session(server, "mx", ("192.0.2.1", 40000))
    t = Transport()
    session.conn.connection_made(t)
    await waiting(session)
    assert t.writes == [b"220 mx.example.test ESMTP Mailflow\r\n"]
    session.conn.data_received(
        b"EHLO a.example.test\r\nMAIL FROM:<carol@elsewhere.test>\r\nRCPT TO:<alice@example.test>\r\n"
        b"RCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
    )
    await waiting(session)
    assert len(t.writes) == 2
    codes = [line[:3] for line in t.writes[1].split(b"\r\n") if line[3:4] == b" "]
    assert codes == [b"250", b"250", b"250", b"550", b"250", b"354"]
    session.conn.data_received(b"Subject: x\r\n\r\nbody\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
    await session.task
    assert len(t.writes) == 3 and t.closed
    codes = [line[:3] for line in t.writes[2].split(b"\r\n") if line[3:4] == b" "]
    assert codes == [b"250", b"250", b"250", b"221"]
    assert [[r.address for r in m.rcpt_to] for m, _ in queue.messages] == [["alice@example.test", "bob@example.test"]]
