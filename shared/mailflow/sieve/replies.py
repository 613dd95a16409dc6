"""The messages Sieve sends: a redirected copy, a rejection (RFC 5429, an MDN, RFC 8098) and a vacation
reply (RFC 5230). Pure: bytes in, bytes out; delivery sends them through the queue.

- `redirected`: the message as it came (our Return-Path: line dropped), under a new Received: field, so
  each redirect counts as a hop; `hops` counts them (delivery refuses to redirect past
  forwarding.MAX_HOPS: a loop of redirects ends there, the message is kept).
- `rejection`: None for a message with the null sender (nobody to tell); else a multipart/report to the
  envelope sender: the reason, the disposition ("deleted"), the original header.
- `vacation_reply`: None when RFC 5230 says not to answer (§4.5-4.6, §5): the null sender, a sender
  that is a list or a daemon (MAILER-DAEMON, LISTSERV, majordomo, owner-*, *-request), a message that is
  Auto-Submitted, Precedence bulk/list/junk or has List-* fields, a sender that is one of the user's own
  addresses, or none of the user's addresses (login, envelope recipient, :addresses) in To, Cc, Bcc,
  Resent-To, Resent-Cc or Resent-Bcc. Else the reply: to the envelope sender, From the user (or :from),
  Subject :subject or "Auto: <subject>", In-Reply-To and References, Auto-Submitted: auto-replied
  (RFC 3834), the reason as text/plain UTF-8 (or as the MIME part it is, with :mime).
  `vacation_key` names one reply per (sender, handle) for the :days memory the store keeps.
Every reply is sent with the null envelope sender, so that nothing answers it back.
"""

from __future__ import annotations

import email.utils
import hashlib
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP

from mailflow.sieve.interpret import Envelope, Message
from mailflow.sieve.script import Vacation

RECIPIENT_FIELDS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")
LIST_FIELDS = ("list-id", "list-help", "list-subscribe", "list-unsubscribe", "list-post", "list-owner", "list-archive")
DAEMONS = ("mailer-daemon", "listserv", "majordomo")


def hops(raw: bytes) -> int:
    """Received: fields in the header section."""
    end = raw.find(b"\r\n\r\n")
    head = raw if end < 0 else raw[:end]
    return sum(1 for line in head.split(b"\n") if line[:9].lower() == b"received:")


def _date(now: float) -> str:
    return email.utils.format_datetime(datetime.fromtimestamp(now, UTC))


def redirected(raw: bytes, hostname: str, target: str, now: float) -> bytes:
    while raw[:12].lower() == b"return-path:":
        raw = raw[raw.find(b"\n") + 1 :] if b"\n" in raw else b""
    trace = f"Received: by {hostname} (Mailflow Sieve redirect)\r\n\tfor <{target}>; {_date(now)}\r\n"
    return trace.encode() + raw


def _message_id(key: str, hostname: str) -> str:
    return f"<{key[:32]}.sieve@{hostname}>"


def _original_head(message: Message) -> bytes:
    return message.head() + b"\r\n"


def _header(fields: list[tuple[str, str]]) -> bytes:
    """Header fields, encoded and folded as SMTP wants (RFC 2047 for non-ASCII), without the blank line."""
    msg = EmailMessage(policy=SMTP)
    for name, value in fields:
        msg[name] = value
    return msg.as_bytes().rstrip(b"\r\n") + b"\r\n"


def rejection(message: Message, envelope: Envelope, reason: str, user: str, hostname: str, now: float, key: str) -> bytes | None:
    if not envelope.mail_from:
        return None
    subject = (message.values("subject") or [""])[0]
    original_id = (message.values("message-id") or [""])[0]
    boundary = f"=_sieve_reject_{key[:16]}"
    head = _header(
        [("From", user), ("To", envelope.mail_from), ("Subject", f"Rejected: {subject}"[:200]), ("Date", _date(now)),
         ("Message-ID", _message_id(key, hostname)), ("Auto-Submitted", "auto-replied (rejected)")]
        + ([("In-Reply-To", original_id)] if original_id else [])
    )  # fmt: skip
    text = f"Your message to {user} was rejected:\r\n\r\n{reason}\r\n".replace("\r\n", "\n").replace("\n", "\r\n")
    report = "\r\n".join(
        [f"Reporting-UA: {hostname}; Mailflow Sieve", f"Final-Recipient: rfc822; {user}"]
        + ([f"Original-Message-ID: {original_id}"] if original_id else [])
        + ["Disposition: automatic-action/MDN-sent-automatically; deleted"]
    )
    body = (
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n"
        f"--{boundary}\r\nContent-Type: message/disposition-notification\r\n\r\n{report}\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    ).encode() + _original_head(message) + f"\r\n--{boundary}--\r\n".encode()
    mime = (f'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=disposition-notification;\r\n'
            f'\tboundary="{boundary}"\r\n\r\n').encode()  # fmt: skip
    return head + mime + body


def vacation_key(v: Vacation, sender: str) -> str:
    handle = v.handle if v.handle is not None else "\0".join((v.reason, v.subject or "", v.from_ or "", str(v.mime)))
    return hashlib.sha256(sender.lower().encode() + b"\0" + handle.encode()).hexdigest()


def _addresses(message: Message, fields: tuple[str, ...]) -> set[str]:
    values = [v for f in fields for v in message.values(f)]
    return {a.lower() for _, a in email.utils.getaddresses(values) if a}


def vacation_applies(v: Vacation, message: Message, envelope: Envelope, user: str) -> bool:
    sender = envelope.mail_from.lower()
    if not sender:
        return False
    local = sender.rpartition("@")[0]
    if local in DAEMONS or local.startswith("owner-") or local.endswith("-request"):
        return False
    auto = (message.values("auto-submitted") or ["no"])[0].split(";")[0].strip().lower()
    if auto != "no":
        return False
    if (message.values("precedence") or [""])[0].strip().lower() in ("bulk", "list", "junk"):
        return False
    if any(message.values(f) for f in LIST_FIELDS):
        return False
    mine = {user.lower(), envelope.rcpt_to.lower(), *(a.lower() for a in v.addresses)}
    if sender in mine:
        return False
    return bool(mine & _addresses(message, RECIPIENT_FIELDS))


def vacation_reply(v: Vacation, message: Message, envelope: Envelope, user: str, hostname: str, now: float) -> bytes | None:
    if not vacation_applies(v, message, envelope, user):
        return None
    subject = v.subject if v.subject is not None else "Auto: " + (message.values("subject") or [""])[0]
    original_id = (message.values("message-id") or [""])[0]
    fields = [("From", v.from_ or user), ("To", envelope.mail_from), ("Subject", subject[:200]), ("Date", _date(now)),
              ("Message-ID", _message_id(vacation_key(v, envelope.mail_from), hostname)),
              ("Auto-Submitted", "auto-replied (vacation)")]  # fmt: skip
    if original_id:
        refs = (message.values("references") or [""])[0]
        fields += [("In-Reply-To", original_id), ("References", (refs + " " + original_id).strip())]
    if v.mime:  # the reason is a MIME entity: its own header, a blank line, its body
        part = v.reason.replace("\r\n", "\n").replace("\n", "\r\n")
        if "\r\n\r\n" not in part:
            part = "\r\n" + part
        return _header(fields) + b"MIME-Version: 1.0\r\n" + part.encode("utf-8")
    text = v.reason.replace("\r\n", "\n").replace("\n", "\r\n")
    mime = b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    return _header(fields) + mime + text.encode("utf-8") + (b"" if text.endswith("\r\n") else b"\r\n")
