"""COMPRESS=DEFLATE (RFC 4978): after the tagged OK both directions are raw DEFLATE; a second COMPRESS
is NO [COMPRESSIONACTIVE]; a FETCH of a large message travels compressed and comes back intact; input
that is not DEFLATE, or a small input that inflates to a lot, cannot make the server hold more than its
limits; over TLS too."""

from __future__ import annotations

import socket
import ssl
import zlib

from imaptest import make_message


class Deflated:
    """A raw IMAP client that switches to DEFLATE (written here from RFC 1951/4978, independent of the server)."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, b""
        self.out = self.inn = None

    def send(self, data: bytes) -> None:
        if self.out is not None:
            data = self.out.compress(data) + self.out.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def _more(self) -> bool:
        got = self.sock.recv(65536)
        if not got:
            return False
        self.buf += self.inn.decompress(got) if self.inn is not None else got
        return True

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._more():
                raise EOFError(self.buf)
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def cmd(self, tag: str, text: str) -> list[bytes]:
        self.send(f"{tag} {text}\r\n".encode())
        lines = []
        while True:
            ln = self.line()
            if ln.endswith(b"}"):  # a literal: read it whole
                n = int(ln.rsplit(b"{", 1)[1][:-1])
                while len(self.buf) < n:
                    assert self._more()
                ln += b"\r\n" + self.buf[:n]
                self.buf = self.buf[n:]
                ln += self.line()
            lines.append(ln)
            if ln.startswith(tag.encode() + b" "):
                return lines

    def compress(self) -> list[bytes]:
        lines = self.cmd("z", "COMPRESS DEFLATE")
        assert lines[-1] == b"z OK DEFLATE active", lines
        assert self.buf == b""  # nothing may follow the OK uncompressed
        self.out = zlib.compressobj(9, zlib.DEFLATED, -15)
        self.inn = zlib.decompressobj(-15)
        return lines


def logged_in(srv) -> Deflated:
    c = Deflated(socket.create_connection(("127.0.0.1", srv.port("imap")), timeout=10))
    c.line()
    assert c.cmd("a0", "LOGIN alice@example.test alice-pw")[-1].startswith(b"a0 OK")
    return c


def test_compress_deflate_both_ways(srv):
    body = "Compressible line of a long message body, again and again.\r\n" * 4000  # ~240 KB
    srv.deliver("alice@example.test", make_message("big", body=body))
    c = logged_in(srv)
    assert b"COMPRESS=DEFLATE" in c.cmd("a1", "CAPABILITY")[0]
    c.compress()
    caps = c.cmd("a2", "CAPABILITY")[0]
    assert b"IMAP4rev1" in caps and b"COMPRESS=DEFLATE" not in caps  # not offered again
    assert c.cmd("a3", "COMPRESS DEFLATE")[-1].startswith(b"a3 NO [COMPRESSIONACTIVE]")
    assert c.cmd("a4", "SELECT INBOX")[-1].startswith(b"a4 OK")
    fetched = c.cmd("a5", "FETCH 1 BODY[TEXT]")
    assert body.encode() in fetched[0]
    assert c.cmd("a6", "LOGOUT")[-1] == b"a6 OK LOGOUT completed"


def test_the_response_really_travels_compressed(srv):
    body = "x" * 200_000 + "\r\n"
    srv.deliver("alice@example.test", make_message("zeros", body=body))
    c = logged_in(srv)
    c.compress()
    c.cmd("a1", "SELECT INBOX")
    c.send(b"a2 FETCH 1 BODY[TEXT]\r\n")
    raw, text = b"", b""
    while b"a2 OK" not in text:
        got = c.sock.recv(65536)
        assert got
        raw += got
        text += c.inn.decompress(got)
    assert len(text) > 200_000 and len(raw) < 10_000  # 200 KB of one letter in a few KB on the wire


def test_unknown_mechanism_and_before_login(srv):
    c = Deflated(socket.create_connection(("127.0.0.1", srv.port("imap")), timeout=10))
    c.line()
    assert b"COMPRESS" not in c.cmd("a1", "CAPABILITY")[0]
    assert c.cmd("a2", "COMPRESS DEFLATE")[-1].startswith(b"a2 NO [CLIENTBUG]")
    c.cmd("a3", "LOGIN alice@example.test alice-pw")
    assert c.cmd("a4", "COMPRESS LZ4")[-1].startswith(b"a4 BAD")
    assert c.cmd("a5", "NOOP")[-1] == b"a5 OK NOOP completed"  # still uncompressed


def test_input_that_is_not_deflate_closes_the_connection(srv):
    c = logged_in(srv)
    c.compress()
    c.sock.sendall(b"\xff\xff\xff\xff not deflate at all\r\n")
    c.sock.settimeout(10)
    assert c.sock.recv(65536) == b""  # closed, nothing answered


def test_a_small_input_that_inflates_past_the_line_limit_is_refused(srv):
    """50 MB of one letter deflate to ~50 KB; the server inflates READ_SIZE at a time into a framer that
    drops an over-long line as it goes, answers BAD, and the session goes on."""
    c = logged_in(srv)
    c.compress()
    c.send(b"a1 NOOP " + b"x" * (50 * 1024 * 1024) + b"\r\n")
    assert c.line() == b"a1 BAD Command line too long"
    assert c.cmd("a2", "NOOP") == [b"a2 OK NOOP completed"]


def test_compress_over_tls(srv):
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", srv.port("imaps")), timeout=10)
    c = Deflated(ctx.wrap_socket(raw))
    c.line()
    c.cmd("a0", "LOGIN alice@example.test alice-pw")
    c.compress()
    assert c.cmd("a1", "NOOP")[-1] == b"a1 OK NOOP completed"
    assert c.cmd("a2", "STATUS INBOX (MESSAGES)")[0] == b'* STATUS "INBOX" (MESSAGES 0)'
