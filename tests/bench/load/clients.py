"""Minimal asyncio clients for SMTP, IMAP and POP3: lock-step, plaintext, just what the load needs.

Each waits for the whole reply to one command before sending the next (no PIPELINING, no LITERAL+),
as a simple mail client does. Every read is bounded by the client's `op_timeout` (TimeoutError); a
reply that is not the expected one raises ReplyError with the server's line; a closed connection
raises ConnectionError or asyncio.IncompleteReadError.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time

HELO = "loadgen.localdomain"
LINE_LIMIT = 1 << 24  # the longest line (or POP3 message) a reader takes in one piece


class ReplyError(Exception):
    """The server answered, but not with what the command needed."""


# What a session can run into: counted as an error by the tools, never a crash of the run.
FAILURES = (OSError, TimeoutError, ReplyError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)


def _shown(line: bytes) -> str:
    return line[:200].decode("ascii", "replace").strip()


class Connection:
    """One connection: `open` connects and waits for the greeting (`greet`), closing it on failure."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, op_timeout: float):
        self.reader, self.writer, self.op_timeout = reader, writer, op_timeout

    @classmethod
    async def open(cls, host: str, port: int, op_timeout: float = 30):
        streams = await asyncio.wait_for(asyncio.open_connection(host, port, limit=LINE_LIMIT), op_timeout)
        client = cls(*streams, op_timeout)
        try:
            await client.greet()
        except BaseException:
            client.abort()
            raise
        return client

    async def greet(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        self.writer.close()


class SmtpClient(Connection):
    async def greet(self) -> None:
        await self.expect(220)
        await self.command(f"EHLO {HELO}", 250)

    async def reply(self) -> tuple[int, bytes]:
        """One reply, all its lines: (code, last line)."""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), self.op_timeout)
            if not line:
                raise ConnectionError("the server closed the connection")
            if len(line) < 4 or not line[:3].isdigit():
                raise ReplyError(f"not an SMTP reply: {_shown(line)}")
            if line[3:4] != b"-":
                return int(line[:3]), line

    async def expect(self, code: int) -> None:
        got, line = await self.reply()
        if got != code:
            raise ReplyError(f"expected {code}: {_shown(line)}")

    async def command(self, text: str, code: int) -> None:
        self.writer.write(text.encode() + b"\r\n")
        await self.expect(code)

    async def login(self, user: str, password: str) -> None:
        """STARTTLS (any certificate: a bench on loopback), EHLO again, AUTH PLAIN: as a mail client submits."""
        await self.command("STARTTLS", 220)
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        await asyncio.wait_for(self.writer.start_tls(ctx), self.op_timeout)
        await self.command(f"EHLO {HELO}", 250)
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        await self.command(f"AUTH PLAIN {token}", 235)

    async def send(self, sender: str, rcpt: str, wire_data: bytes, rset: bool = True) -> float:
        """One transaction of a message already dot-stuffed (see `wire`); returns the seconds from the
        end of its DATA being written to the 250, then resets the transaction unless told not to."""
        await self.command(f"MAIL FROM:<{sender}>", 250)
        await self.command(f"RCPT TO:<{rcpt}>", 250)
        await self.command("DATA", 354)
        self.writer.write(wire_data)
        sent = time.perf_counter()
        await self.expect(250)
        accepted = time.perf_counter() - sent
        if rset:
            await self.command("RSET", 250)
        return accepted

    async def quit(self) -> None:
        """QUIT, wait briefly for its reply, close: never raises."""
        try:
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self.reader.readline(), 2)
        except (OSError, TimeoutError):
            pass
        self.abort()


def wire(message: bytes) -> bytes:
    """A CRLF message as DATA sends it: lines starting with '.' doubled, then the final '.' line."""
    if message.startswith(b"."):
        message = b"." + message
    message = message.replace(b"\r\n.", b"\r\n..")
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message + b".\r\n"


def quoted(text: str) -> str:
    """An IMAP quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapClient(Connection):
    tags = 0

    async def greet(self) -> None:
        greeting = await self.response()
        if not greeting.startswith(b"* OK"):
            raise ReplyError(f"greeting: {_shown(greeting)}")

    async def response(self) -> bytes:
        """One response line, any literals in it read whole and kept inline ({n}CRLF + n bytes)."""
        out = await asyncio.wait_for(self.reader.readline(), self.op_timeout)
        if not out:
            raise ConnectionError("the server closed the connection")
        while out.endswith(b"}\r\n"):
            brace = out.rfind(b"{")
            size = out[brace + 1 : -3]
            if brace < 0 or not size.isdigit():
                break
            out += await asyncio.wait_for(self.reader.readexactly(int(size)), self.op_timeout)
            out += await asyncio.wait_for(self.reader.readline(), self.op_timeout)
        return out

    def send(self, command: str) -> bytes:
        """Write one tagged command; returns its tag."""
        self.tags += 1
        tag = b"t%d" % self.tags
        self.writer.write(tag + b" " + command.encode() + b"\r\n")
        return tag

    async def finish(self, *tags: bytes) -> list[bytes]:
        """Read until every one of `tags` has completed; returns all untagged responses meanwhile, in
        order; ReplyError unless each completed OK. With pipelined commands a server may answer them
        interleaved (Dovecot sends a SEARCH's result before the completion of the NOOP sent first), so
        an untagged response cannot be attributed to one command by where it falls."""
        untagged = []
        waiting = {tag + b" " for tag in tags}
        while waiting:
            line = await self.response()
            prefix = line[: line.find(b" ") + 1]
            if prefix in waiting:
                if line[len(prefix) : len(prefix) + 2] != b"OK":
                    raise ReplyError(_shown(line))
                waiting.discard(prefix)
            else:
                untagged.append(line)
        return untagged

    async def command(self, command: str) -> list[bytes]:
        return await self.finish(self.send(command))

    async def login(self, user: str, password: str) -> None:
        await self.command(f"LOGIN {quoted(user)} {quoted(password)}")

    async def select(self, mailbox: str = "INBOX") -> int:
        """SELECT; returns the EXISTS count."""
        for line in await self.command(f"SELECT {quoted(mailbox)}"):
            words = line.split()
            if len(words) == 3 and words[2] == b"EXISTS":
                return int(words[1])
        raise ReplyError("SELECT without EXISTS")

    async def append(self, mailbox: str, message: bytes) -> None:
        """APPEND with a synchronizing literal: wait for '+' before sending the message."""
        tag = self.send(f"APPEND {quoted(mailbox)} {{{len(message)}}}")
        go_ahead = await self.response()
        if not go_ahead.startswith(b"+"):
            raise ReplyError(f"APPEND: {_shown(go_ahead)}")
        self.writer.write(message + b"\r\n")
        await self.finish(tag)

    async def logout(self) -> None:
        """LOGOUT, wait briefly for its completion, close: never raises."""
        try:
            await asyncio.wait_for(self.command("LOGOUT"), 2)
        except (OSError, TimeoutError, ReplyError, asyncio.IncompleteReadError):
            pass
        self.abort()


class Pop3Client(Connection):
    async def greet(self) -> None:
        await self.status()

    async def status(self) -> bytes:
        line = await asyncio.wait_for(self.reader.readline(), self.op_timeout)
        if not line:
            raise ConnectionError("the server closed the connection")
        if not line.startswith(b"+OK"):
            raise ReplyError(_shown(line))
        return line

    async def command(self, text: str) -> bytes:
        self.writer.write(text.encode() + b"\r\n")
        return await self.status()

    async def multiline(self, text: str) -> bytes:
        """A command with a multi-line answer; returns the lines between the status line and the
        final '.', still dot-stuffed (a load tool only counts them)."""
        await self.command(text)
        parts = []
        while True:  # the answer ends at a line that is just "."; most lines do not end with one
            chunk = await asyncio.wait_for(self.reader.readuntil(b".\r\n"), self.op_timeout)
            parts.append(chunk)
            if len(chunk) == 3 or chunk[-4:-3] == b"\n":  # the '.' starts a line: the end
                return b"".join(parts)[:-3]

    async def login(self, user: str, password: str) -> None:
        await self.command(f"USER {user}")
        await self.command(f"PASS {password}")

    async def quit(self) -> None:
        try:
            await asyncio.wait_for(self.command("QUIT"), 2)
        except (OSError, TimeoutError, ReplyError):
            pass
        self.abort()
