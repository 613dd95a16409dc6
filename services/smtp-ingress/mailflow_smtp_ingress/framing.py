"""SMTP framing: the bytes a socket gave, cut into command lines, DATA bodies and BDAT chunks.

No I/O and no SMTP dialogue: `Framer` holds the bytes received and not yet used; the connection feeds
it (`feed`) and the session takes what it expects next. Each taker returns None while the piece is
incomplete and keeps its place between calls, so every byte is scanned once however the input is cut.
Nothing here raises for any input.

- `line(limit)`: one command line with its terminator (up to LF; the session refuses a bare LF, or a
  CR or NUL inside). A line longer than `limit` is skipped up to its end, never buffered whole, and
  comes out as TOO_LONG.
- `body(limit)`: DATA's text up to `<CRLF>.<CRLF>` (RFC 5321 §4.1.1.4; the first CRLF is the last
  line's own): (text, False), or (b"", True) when it was longer than `limit`, in which case it was
  dropped as it came, so the buffer never holds more than the limit. Only `<CRLF>.<CRLF>` ends it:
  `<LF>.<LF>` and its cousins are text (the session then refuses the message: no SMTP smuggling).
- `chunk(n, keep)`: exactly n octets (BDAT, RFC 3030), or, with keep=False, n octets dropped as they come.
- `discard()`: drop everything (STARTTLS: nothing sent before the handshake counts, RFC 3207 §4.2).
"""

from __future__ import annotations


class TooLong(bytes):
    """The marker `line` returns for a line over the limit (compared by identity)."""


TOO_LONG = TooLong(b"\0too long")
_END = b"\r\n.\r\n"


class Framer:
    __slots__ = ("buf", "_skipping", "_scanned", "_overflow", "_in_body", "_left")

    def __init__(self) -> None:
        self.buf = bytearray()
        self._skipping = False  # dropping the rest of an over-long line
        self._scanned = 0  # body: octets already searched for the end (minus the overlap)
        self._overflow = False  # body: over the limit, being dropped
        self._in_body = False
        self._left = -1  # chunk: octets still to come; -1: no chunk begun

    def feed(self, data: bytes) -> None:
        self.buf += data

    def __len__(self) -> int:
        return len(self.buf)

    def discard(self) -> int:
        """Drop everything buffered and every piece begun; returns how many octets were dropped."""
        n = len(self.buf)
        self.buf.clear()
        self._skipping = self._overflow = self._in_body = False
        self._scanned, self._left = 0, -1
        return n

    def line(self, limit: int) -> bytes | None:
        """A whole line with its terminator, TOO_LONG, or None (need more)."""
        buf = self.buf
        i = buf.find(b"\n")
        if i < 0:
            if len(buf) > limit:
                self._skipping = True
                buf.clear()
            return None
        line = bytes(buf[: i + 1])
        del buf[: i + 1]
        if self._skipping or len(line) > limit:
            self._skipping = False
            return TOO_LONG
        return line

    def body(self, limit: int) -> tuple[bytes, bool] | None:
        """DATA's text through `<CRLF>.<CRLF>` (the terminator and dot taken off, not unstuffed):
        (text, too_big), or None (need more)."""
        buf = self.buf
        if not self._in_body:
            if buf.startswith(b".\r\n"):  # the empty message
                del buf[:3]
                return b"", False
            if len(buf) < 3 and b".\r\n".startswith(bytes(buf)):
                return None  # it may still be the empty message
            self._in_body, self._scanned, self._overflow = True, 0, False
        end = buf.find(_END, max(self._scanned - 4, 0))
        if end >= 0:
            overflow = self._overflow
            text = b"" if overflow else bytes(buf[: end + 2])
            del buf[: end + 5]
            self._in_body = False
            if overflow or len(text) > limit:
                return b"", True
            return text, False
        self._scanned = len(buf)
        if self._scanned > limit + 4:  # keep only what may be the start of the terminator
            self._overflow = True
            del buf[:-4]
            self._scanned = 4
        return None

    def chunk(self, n: int, keep: bool) -> bytes | None:
        """Exactly `n` octets (b"" when not kept), or None (need more)."""
        buf = self.buf
        if keep:
            if len(buf) < n:
                return None
            data = bytes(buf[:n])
            del buf[:n]
            return data
        if self._left < 0:
            self._left = n
        take = min(self._left, len(buf))
        del buf[:take]
        self._left -= take
        if self._left:
            return None
        self._left = -1
        return b""
