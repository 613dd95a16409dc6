"""IMAP command framing: the bytes a socket gave, cut into whole commands (a line plus its literals).

No I/O. The limits apply *before* reading: a synchronizing literal that is too large is refused instead
of being asked for (`FrameError`; the client never sends it); a LITERAL+ one that is too large is fatal
(the client sends it anyway, RFC 7888 §4: the session says `* BYE` and closes); an over-long line is
skipped up to its end and answered `BAD`. Nothing here raises for any input.

The session sets the limits per state (`limit`): small before authentication, where only LOGIN and
AUTHENTICATE need a literal and APPEND is not allowed (`max_append` None: its literal is one like any
other, so a 50 MB APPEND before login is refused before a byte of it is read).
"""

from __future__ import annotations

import re

from mailflow_imap_pop3.imap.lexer import TAG


class Continue:
    """A synchronizing literal was accepted: the session sends "+ ..." and the client sends it."""


CONTINUE = Continue()


class FrameError:
    __slots__ = ("tag", "status", "text", "fatal")

    def __init__(self, tag: str, status: str, text: str, fatal: bool = False):
        self.tag, self.status, self.text, self.fatal = tag, status, text, fatal

    def __repr__(self) -> str:
        return f"FrameError({self.tag!r}, {self.status!r}, {self.text!r}, fatal={self.fatal})"


_LITERAL_END = re.compile(rb"\{(\d{1,20})(\+?)\}\Z")
_HEAD = re.compile(rb"([^\s(){%*\"\\\]+]+) +(?:(UID) +)?([A-Za-z]+)")
MAX_LITERALS = 64  # literals in one command


def _head(line: bytes) -> tuple[str, str]:
    """(tag, command name) from a command's first line, as well as they can be told."""
    m = _HEAD.match(line)
    if m is None:
        tag = line.split(b" ", 1)[0]
        return (tag.decode("latin-1") if tag and TAG.fullmatch(tag) else "*"), ""
    return m.group(1).decode("latin-1"), m.group(3).decode("latin-1").upper()


def command_budget(max_append: int, max_line: int) -> int:
    """Octets one APPEND command may bring in all (MULTIAPPEND, CATENATE): one message's worth plus a
    few lines of flags and dates. The framer counts what the client sends against it, catenate.py what
    the URLs add."""
    return max_append + 4 * max_line


class Framer:
    def __init__(
        self, max_line: int = 65_536, max_literal: int = 65_536, max_append: int | None = 50 * 1024 * 1024
    ):
        self.limit(max_line, max_literal, max_append)
        self._buf = bytearray()
        self._scan = 0  # the next LF is searched for from here
        self._cmd = bytearray()  # the command so far: whole lines and literals
        self._literal = 0  # literal octets still to move from _buf into _cmd
        self._literals = 0
        self._skipping = False  # dropping an over-long line up to its end
        self._tag, self._name = "*", ""

    def limit(self, max_line: int, max_literal: int, max_append: int | None) -> None:
        """The limits from the next command on (the session calls this when the state changes)."""
        self.max_line, self.max_literal, self.max_append = max_line, max_literal, max_append

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Octets received but not yet framed (pipelined commands, or the start of one)."""
        return len(self._buf)

    @property
    def between_commands(self) -> bool:
        """Nothing of a next command has arrived (NOTIFY's news may go out now, RFC 5465 §1)."""
        return not self._buf and not self._cmd and not self._literal and not self._skipping

    def discard(self) -> int:
        """Drop everything buffered (after STARTTLS: nothing sent in the clear may count). Returns how much."""
        n = len(self._buf)
        self._buf.clear()
        self._scan = 0
        self._reset()
        return n

    def _reset(self) -> None:
        self._cmd = bytearray()
        self._literal = self._literals = 0
        self._tag, self._name = "*", ""

    def next_line(self) -> bytes | None:
        """One raw line (IDLE's DONE, an AUTHENTICATE response) without its CRLF, or None if incomplete.
        ValueError when it is longer than max_line (the line is dropped)."""
        i = self._buf.find(b"\n", self._scan)
        if i < 0:
            if len(self._buf) > self.max_line:
                self._skipping = True
                self._buf.clear()
                self._scan = 0
                raise ValueError("line too long")
            self._scan = len(self._buf)
            return None
        line = bytes(self._buf[:i])
        del self._buf[: i + 1]
        self._scan = 0
        if self._skipping:
            self._skipping = False
            raise ValueError("line too long")
        return line[:-1] if line.endswith(b"\r") else line

    def next(self) -> bytes | Continue | FrameError | None:
        """The next whole command (bytes, no final CRLF), CONTINUE, a FrameError, or None (need more)."""
        buf = self._buf
        while True:
            if self._literal:
                n = min(self._literal, len(buf))
                if n == 0:
                    return None
                self._cmd += buf[:n]
                del buf[:n]
                self._literal -= n
                if self._literal:
                    return None
                self._scan = 0
            i = buf.find(b"\n", self._scan)
            if i < 0:
                if len(buf) > self.max_line and not self._skipping:
                    if not self._cmd:
                        self._tag, self._name = _head(bytes(buf[:200]))
                    self._skipping = True
                if self._skipping:
                    buf.clear()
                    self._scan = 0
                else:
                    self._scan = len(buf)
                return None
            line = bytes(buf[:i])
            del buf[: i + 1]
            self._scan = 0
            if line.endswith(b"\r"):
                line = line[:-1]
            if self._skipping or len(line) > self.max_line:
                if not self._cmd and not self._skipping:
                    self._tag, self._name = _head(line[:200])
                self._skipping = False
                tag = self._tag
                self._reset()
                return FrameError(tag, "BAD", "Command line too long")
            if not self._cmd:
                if not line:
                    continue  # an empty line is no command: ignore it
                self._tag, self._name = _head(line)
            m = _LITERAL_END.search(line)
            if m is None:
                self._cmd += line
                data = bytes(self._cmd)
                self._reset()
                return data
            size, plus = int(m.group(1)), bool(m.group(2))
            append = self._name == "APPEND" and self.max_append is not None
            limit = self.max_append if append else self.max_literal
            total = len(self._cmd) + len(line) + size
            self._literals += 1
            if self._literals > MAX_LITERALS:  # a count, not a size: not TOOBIG
                tag = self._tag
                self._reset()
                return FrameError(tag, "BAD", f"[LIMIT] More than {MAX_LITERALS} literals in one command", fatal=plus)
            if size > limit or total > command_budget(limit, self.max_line):
                tag = self._tag
                self._reset()
                if plus:
                    return FrameError(tag, "BAD", "[TOOBIG] Literal too big", fatal=True)
                if append:
                    return FrameError(tag, "NO", f"[TOOBIG] Message too big (the limit is {limit} octets)")
                return FrameError(tag, "BAD", f"[TOOBIG] Literal too big (the limit is {limit} octets)")
            self._cmd += line + b"\r\n"
            self._literal = size
            if not plus:
                return CONTINUE
