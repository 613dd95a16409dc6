"""What smtp-ingress writes into a message: the Received: trace header, and on submission a missing
Message-ID: and Date:. Pure functions over bytes; nothing here can fail on odd input (a message
without a header/body separator is all header; a HELO with odd characters is sanitized first).
"""

from __future__ import annotations

import re
import time

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_HAS_ID_OR_DATE = re.compile(rb"(?im)^(message-id|date)[ \t]*:")

_date_cache: tuple[int, str] = (-1, "")


def rfc5322_date(ts: float | None = None) -> str:
    """'Thu, 27 Nov 2025 10:00:00 +0000' (RFC 5322 §3.3, UTC, independent of the locale)."""
    global _date_cache
    sec = int(time.time() if ts is None else ts)
    if _date_cache[0] == sec:
        return _date_cache[1]
    t = time.gmtime(sec)
    text = (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )
    _date_cache = (sec, text)
    return text


def protocol_name(esmtp: bool, tls: bool, auth: bool, utf8: bool) -> str:
    """The WITH clause: RFC 3848 (ESMTP, ESMTPS, ESMTPA, ESMTPSA) and RFC 6531 (UTF8SMTP...)."""
    if not esmtp:
        return "SMTP"
    return ("UTF8SMTP" if utf8 else "ESMTP") + ("S" if tls else "") + ("A" if auth else "")


def address_literal(ip: str) -> str:
    return f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"


def received(
    *,
    helo: str,
    ip: str,
    hostname: str,
    protocol: str,
    queue_id: str,
    tls: str | None,
    rcpt: str | None,
    when: float | None = None,
) -> bytes:
    """RFC 5321 §4.4 time stamp line, folded; `rcpt` only when the message has a single recipient."""
    lines = [
        f"Received: from {helo} ({address_literal(ip)})",
        f"\tby {hostname} (Mailflow) with {protocol} id {queue_id}",
    ]
    if tls:
        version, _, cipher = tls.partition(" ")
        lines.append(f"\t(version={version} cipher={cipher})" if cipher else f"\t(version={version})")
    tail = f"\tfor <{rcpt}>; " if rcpt else "\t; "
    if not tls and not rcpt:
        lines[-1] += f"; {rfc5322_date(when)}"
    else:
        lines.append(tail + rfc5322_date(when))
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def add_missing_id_and_date(message: bytes, message_id: str, date: str) -> bytes:
    """Append Message-ID:/Date: to the header block if the message lacks them (submission only)."""
    if message.startswith(b"\r\n"):
        head_end = 0
    else:
        sep = message.find(b"\r\n\r\n")
        head_end = len(message) if sep < 0 else sep + 2
    head = message[:head_end]
    present = {m.group(1).lower() for m in _HAS_ID_OR_DATE.finditer(head)}
    extra = b""
    if b"message-id" not in present:
        extra += f"Message-ID: {message_id}\r\n".encode()
    if b"date" not in present:
        extra += f"Date: {date}\r\n".encode()
    if not extra:
        return message
    if head and not head.endswith(b"\r\n"):
        head += b"\r\n"
    return head + extra + message[head_end:]


MAX_MESSAGE_ID = 998  # RFC 5322 §2.1.1: a line's limit


def message_id(message: bytes) -> str:
    """The Message-ID field's value (unfolded, trimmed, at most MAX_MESSAGE_ID characters; bytes that are
    not UTF-8 replaced), or "" if the header block has none. One pass over the header lines, no regex."""
    sep = -2 if message.startswith(b"\r\n") else message.find(b"\r\n\r\n")
    head_end = len(message) if sep == -1 else sep + 2
    pos, value = 0, None
    while pos < head_end:
        nl = message.find(b"\r\n", pos, head_end)
        end = head_end if nl < 0 else nl + 2
        line = message[pos:end]
        pos = end
        if value is not None:
            if line[:1] in (b" ", b"\t"):
                value += line
                continue
            break
        name, colon, rest = line.partition(b":")
        if colon and name.strip().lower() == b"message-id":
            value = rest
    if value is None:
        return ""
    text = " ".join(value.decode("utf-8", "replace").split())
    return text[:MAX_MESSAGE_ID]


def remove_fields(message: bytes, names: tuple[str, ...]) -> bytes:
    """The message without the header fields called `names` (any case), with their folded lines.
    One pass over the header block's lines; the body is never looked at."""
    if not names:
        return message
    drop = {n.lower().encode("ascii", "replace") for n in names}
    sep = -2 if message.startswith(b"\r\n") else message.find(b"\r\n\r\n")
    head_end = len(message) if sep == -1 else sep + 2
    out: list[bytes] = []
    skipping, pos, removed = False, 0, False
    while pos < head_end:
        nl = message.find(b"\r\n", pos, head_end)
        end = head_end if nl < 0 else nl + 2
        line = message[pos:end]
        if line[:1] in (b" ", b"\t"):  # a continuation belongs to the field before it
            if not skipping:
                out.append(line)
        else:
            colon = line.find(b":")
            skipping = colon > 0 and line[:colon].rstrip(b" \t").lower() in drop
            removed |= skipping
            if not skipping:
                out.append(line)
        pos = end
    return b"".join(out) + message[head_end:] if removed else message
