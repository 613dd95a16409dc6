"""BINARY (RFC 3516): FETCH BINARY[part], BINARY.PEEK and BINARY.SIZE decode the part's
Content-Transfer-Encoding (base64, quoted-printable; 7bit/8bit/binary as they are), NUL-bearing content
comes as a literal8, partials work, an unknown encoding is NO [UNKNOWN-CTE], and APPEND takes a literal8."""

from __future__ import annotations

import base64

from imaptest import Raw

PNG = bytes(range(256)) * 4  # binary content with NULs
MESSAGE = (
    b"From: Carol <carol@elsewhere.test>\r\nTo: alice@example.test\r\nSubject: parts\r\n"
    b"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"caf=C3=A9 =\r\nau lait\r\n"
    b"--b1\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(PNG).replace(b"\n", b"\r\n")
    + b"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
    b"begin 644 x\r\n#86)C\r\n`\r\nend\r\n"
    b"--b1--\r\n"
)


def session(srv) -> Raw:
    srv.deliver("alice@example.test", MESSAGE)
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.send("a0 LOGIN alice@example.test alice-pw")
    c.until("a0")
    c.send("a1 SELECT INBOX")
    c.until("a1")
    return c


def cmd(c: Raw, tag: str, text: str) -> list[bytes]:
    c.send(f"{tag} {text}")
    return c.until(tag)


def test_binary_is_advertised(srv):
    c = session(srv)
    assert b" BINARY" in cmd(c, "a2", "CAPABILITY")[0]


def test_quoted_printable_and_base64_parts_come_decoded(srv):
    c = session(srv)
    lines = cmd(c, "a2", "FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1] BINARY.SIZE[2])")
    text = "café au lait".encode()  # the CRLF before the boundary is the boundary's
    assert lines[0] == (
        b"* 1 FETCH (BINARY[1] {%d}\r\n" % len(text) + text + b" BINARY.SIZE[1] %d BINARY.SIZE[2] %d)" % (len(text), len(PNG))
    )
    lines = cmd(c, "a3", "FETCH 1 BINARY.PEEK[2]")
    assert lines[0] == b"* 1 FETCH (BINARY[2] ~{%d}\r\n" % len(PNG) + PNG + b")"  # NULs: a literal8
    lines = cmd(c, "a4", "FETCH 1 BINARY.PEEK[2]<256.16>")
    assert lines[0] == b"* 1 FETCH (BINARY[2]<256> ~{16}\r\n" + PNG[256:272] + b")"
    assert b"\\Seen" not in cmd(c, "a5", "FETCH 1 FLAGS")[0]  # PEEK and SIZE set nothing


def test_binary_sets_seen_and_whole_message_is_as_stored(srv):
    c = session(srv)
    lines = cmd(c, "a2", "FETCH 1 (BINARY[] BINARY.SIZE[])")
    assert MESSAGE in lines[0] and b"BINARY.SIZE[] %d" % len(MESSAGE) in lines[0]
    assert b"\\Seen" in lines[0]  # reported with the new FLAGS


def test_unknown_encoding_is_refused_and_missing_parts_are_empty(srv):
    c = session(srv)
    assert cmd(c, "a2", "FETCH 1 BINARY.PEEK[3]")[-1].startswith(b"a2 NO [UNKNOWN-CTE]")
    assert cmd(c, "a3", "FETCH 1 BINARY.PEEK[9]")[0] == b'* 1 FETCH (BINARY[9] {0}\r\n)'
    assert cmd(c, "a4", "FETCH 1 BINARY.PEEK[1.TEXT]")[-1].startswith(b"a4 BAD")
    assert cmd(c, "a5", "FETCH 1 BINARY.PEEK[0]")[-1].startswith(b"a5 BAD")


def test_append_takes_a_literal8(srv):
    c = session(srv)
    body = b"From: a@b.test\r\nSubject: nul\r\nContent-Transfer-Encoding: binary\r\n\r\nzero\x00byte\r\n"
    c.send_raw(b"a2 APPEND INBOX ~{%d+}\r\n" % len(body) + body + b"\r\n")
    assert c.until("a2")[-1].startswith(b"a2 OK [APPENDUID")
    lines = cmd(c, "a3", "FETCH 2 BINARY.PEEK[1]")
    assert lines[0] == b"* 2 FETCH (BINARY[1] ~{11}\r\nzero\x00byte\r\n)"
