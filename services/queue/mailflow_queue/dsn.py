"""Delivery status notifications: RFC 3464 multipart/report messages, from the null sender.

`build` is pure: the notice's data and (maybe) the original message in, the DSN's bytes out. It
never fails on odd input: non-ASCII diagnostics are made ASCII, a missing original leaves out the
third part. Which kind goes to whom (and never about a DSN) is decided in `ledger`.
RFC 3461 (NOTIFY/RET/ENVID/ORCPT), RFC 3462/6522 (multipart/report), RFC 3464 (delivery-status),
RFC 3834 (Auto-Submitted).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from email.utils import format_datetime

from mailflow_queue.ledger import NoticeWork

SUBJECTS = {
    "failure": "Undelivered Mail Returned to Sender",
    "delay": "Delayed Mail (still being retried)",
    "success": "Successful Mail Delivery Report",
}


def _date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC))


def _ascii(text: str, limit: int = 900) -> str:
    clean = " ".join(text.replace("\r", " ").replace("\n", " ").split())
    return clean.encode("ascii", "replace").decode()[:limit]


def _headers(original: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n"):
        head, found, _ = original.partition(sep)
        if found:
            return head + b"\r\n"
    return original if original.endswith(b"\n") else original + b"\r\n"


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def action(kind: str, remote_mta: str | None) -> str:
    if kind == "failure":
        return "failed"
    if kind == "delay":
        return "delayed"
    return "relayed" if remote_mta else "delivered"  # we do not pass NOTIFY on to a remote MTA


def status(kind: str, given: str) -> str:
    if kind == "success":
        return "2.0.0"
    if given[:1] in ("4", "5") and given.count(".") == 2:
        return given
    return "5.0.0" if kind == "failure" else "4.0.0"


def returns_full(work: NoticeWork, full_max: int) -> bool:
    if work.kind != "failure":
        return False  # delay and success reports carry the headers only
    if work.ret == "HDRS":
        return False
    return work.ret == "FULL" or work.size <= full_max


def human_text(work: NoticeWork, hostname: str) -> str:
    lines = [f"This is the mail system at host {hostname}.", ""]
    if work.kind == "failure":
        lines += ["I'm sorry to have to inform you that your message could not", "be delivered to one or more recipients."]
    elif work.kind == "delay":
        lines += [
            "Your message could not be delivered yet to one or more recipients.",
            f"It will be retried until {_date(work.will_retry_until)}.",
            "You do not need to send it again.",
        ]
    else:
        lines += ["Your message was successfully delivered to the recipients below."]
    lines.append("")
    for r in work.recipients:
        lines.append(f"<{r.address}>: {_ascii(r.diagnostic) or status(work.kind, r.status)}")
    return "\r\n".join(lines) + "\r\n"


def delivery_status(work: NoticeWork, hostname: str) -> str:
    """The message/delivery-status part (RFC 3464 §2): per-message fields, then one block per recipient."""
    per_msg = [f"Reporting-MTA: dns; {hostname}"]
    if work.envid:
        per_msg.append(f"Original-Envelope-Id: {_ascii(work.envid, 100)}")
    per_msg.append(f"Arrival-Date: {_date(work.received_at)}")
    blocks = ["\r\n".join(per_msg)]
    for r in work.recipients:
        f = []
        if r.orcpt:
            orcpt = r.orcpt if ";" in r.orcpt else f"rfc822; {r.orcpt}"
            f.append(f"Original-Recipient: {_ascii(orcpt, 600)}")
        f.append(f"Final-Recipient: rfc822; {_ascii(r.address, 600)}")
        f.append(f"Action: {action(work.kind, r.remote_mta)}")
        f.append(f"Status: {status(work.kind, r.status)}")
        if r.remote_mta:
            f.append(f"Remote-MTA: dns; {_ascii(r.remote_mta, 255)}")
        if r.diagnostic:
            f.append(f"Diagnostic-Code: smtp; {_ascii(r.diagnostic)}")
        f.append(f"Last-Attempt-Date: {_date(r.last_attempt_at)}")
        if work.kind == "delay":
            f.append(f"Will-Retry-Until: {_date(work.will_retry_until)}")
        blocks.append("\r\n".join(f))
    return "\r\n\r\n".join(blocks) + "\r\n"


def build(work: NoticeWork, original: bytes | None, hostname: str, now: float, full_max: int = 1 << 20) -> bytes:
    boundary = f"=_mailflow_{secrets.token_hex(12)}"
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{work.mail_from}>",
        f"Subject: {SUBJECTS[work.kind]}",
        f"Date: {_date(now)}",
        f"Message-ID: <{work.dsn_queue_id}@{hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "Content-Transfer-Encoding: 7bit" if original is None else "",
    ]
    out = ["\r\n".join(h for h in head if h), "\r\n\r\n", "This is a MIME-encapsulated message.\r\n\r\n"]
    out.append(f"--{boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
    out.append(human_text(work, hostname))
    out.append(f"\r\n--{boundary}\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n")
    out.append(delivery_status(work, hostname))
    raw = "".join(out).encode()
    if original is not None:
        if returns_full(work, full_max):
            part = b"Content-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\n\r\n" + _crlf(original)
        else:
            part = b"Content-Description: Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n" + _crlf(
                _headers(original)
            )
        if not part.endswith(b"\r\n"):
            part += b"\r\n"
        raw += f"\r\n--{boundary}\r\n".encode() + part
    raw += f"\r\n--{boundary}--\r\n".encode()
    return raw
