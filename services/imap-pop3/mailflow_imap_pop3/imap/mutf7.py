"""IMAP mailbox names on the wire: modified UTF-7 (RFC 3501 §5.1.3) to and from the store's UTF-8 names,
or UTF-8 itself for a session that enabled IMAP4rev2 (RFC 9051 §5.1: there `&` is only an ampersand).

The store keeps one form, the Unicode text; only the wire form depends on the session. `decode` and
`decode_utf8` raise ValueError for a name that is not valid in their form (the caller answers NO, or
matches nothing with a LIST pattern); `encode` never fails.
"""

from __future__ import annotations

import binascii
import re
import unicodedata

_SHIFTED = re.compile(rb"&([^-]*)-")


def encode(name: str) -> bytes:
    """'Entwürfe' -> b'Entw&APw-rfe'; '&' -> b'&-'."""
    out = bytearray()
    run: list[str] = []

    def flush() -> None:
        if run:
            utf16 = "".join(run).encode("utf-16-be")
            out.extend(
                b"&" + binascii.b2a_base64(utf16, newline=False).rstrip(b"=").replace(b"/", b",") + b"-"
            )
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.extend(b"&-" if ch == "&" else ch.encode("ascii"))
        else:
            run.append(ch)
    flush()
    return bytes(out)


def decode(data: bytes) -> str:
    """b'Entw&APw-rfe' -> 'Entwürfe'. 8-bit input is taken as UTF-8 (some clients send it so)."""
    if any(b >= 0x80 for b in data):
        return data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    out: list[str] = []
    pos = 0
    while True:
        amp = data.find(b"&", pos)
        if amp < 0:
            out.append(data[pos:].decode("ascii"))
            break
        out.append(data[pos:amp].decode("ascii"))
        m = _SHIFTED.match(data, amp)
        if m is None:
            raise ValueError("unterminated '&' in a mailbox name")
        b64 = m.group(1)
        if not b64:
            out.append("&")
        else:
            if b"/" in b64 or b"=" in b64:
                raise ValueError("bad modified base64 in a mailbox name")
            raw = b64.replace(b",", b"/")
            try:
                utf16 = binascii.a2b_base64(raw + b"=" * (-len(raw) % 4))
                text = utf16.decode("utf-16-be")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise ValueError("bad modified base64 in a mailbox name") from exc
            if any(0x20 <= ord(c) <= 0x7E for c in text) or encode(text) != b"&" + b64 + b"-":
                raise ValueError("mailbox name is not in canonical modified UTF-7")
            out.append(text)
        pos = m.end()
    return "".join(out)


def _control(ch: str) -> bool:
    o = ord(ch)
    return o < 0x20 or 0x7F <= o <= 0x9F


def decode_utf8(data: bytes) -> str:
    """A rev2 client's name: strict UTF-8 without control characters (RFC 9051 §5.1, Net-Unicode)."""
    text = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if any(_control(ch) for ch in text):
        raise ValueError("control character in a mailbox name")
    return text


def decode_name(data: bytes, utf8: bool, new: bool = False) -> str:
    """A name from the wire; `new`: one a rev2 client would create, which must also be in Unicode
    normalization form C (Net-Unicode, RFC 5198; RFC 9051 §6.3.4: refuse it or convert it; we refuse)."""
    if not utf8:
        return decode(data)
    text = decode_utf8(data)
    if new and not unicodedata.is_normalized("NFC", text):
        raise ValueError("not in Unicode normalization form C")
    return text
