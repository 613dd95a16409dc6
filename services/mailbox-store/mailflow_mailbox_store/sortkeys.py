"""What SORT and THREAD (RFC 5256, RFC 5957 DISPLAY) compare, taken from a body's parse once, when the body
is stored (parsing.prepare), and kept in the body's row (columns `sort_*` of blobs, migration 0012).

- base subject (RFC 5256 §2.1): RFC 2047 words decoded, whitespace runs made one space, then the
  "(fwd)" trailers, "Re:"/"Fw:"/"Fwd:" leaders with their "[blob]"s, leading "[blob]"s (unless nothing
  would be left) and a "[fwd: ...]" wrapper taken away until none is left; `reply` says whether any was
  (the REFERENCES algorithm's "is a reply or forward"). Kept ASCII-uppercased (i;ascii-casemap, the
  comparator RFC 5256 names), and at most MAX_SUBJECT characters of the decoded subject are read.
- sent date (§2.2): the Date: header as Unix seconds, a zone that cannot be read taken as UTC; None
  when there is no readable Date: (the sorter then uses the internal date).
- FROM / TO / CC: the addr-mailbox of the field's first address, ASCII-uppercased; "" when none.
- DISPLAYFROM / DISPLAYTO (RFC 5957): the first address's display name (RFC 2047 decoded), else its
  addr-spec, folded with str.casefold (i;unicode-casemap).
- Message-ID and the parents (RFC 5256 §4 REFERENCES step 1): the msg-ids of References:, else the
  first of In-Reply-To:, at most MAX_REFS of them (the nearest: the last ones) of at most MAX_ID
  characters each; an id longer than that is ignored, as is a malformed one.

Nothing here raises: a header that cannot be read gives the value of a missing one. The scanner is a
hand-written loop over indexes (no regular expression), linear in the subject's length.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from mailflow import mime

MAX_SUBJECT = 4096  # characters of a decoded subject that are read; the rest is not compared
MAX_ADDRESS = 512  # characters kept of an address key
MAX_ID = 250  # characters of one msg-id (RFC 5322 lines are 998 at most; real ids are < 100)
MAX_REFS = 20  # parents kept per message: the REFERENCES list is bounded, so THREAD is

_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)
_WSP = " \t"


def ascii_upper(text: str) -> str:
    """i;ascii-casemap: a-z to A-Z and nothing else."""
    return text.translate(_UPPER)


@dataclass(frozen=True, slots=True)
class SortKeys:
    subject: str  # base subject, ascii_upper
    reply: bool  # the subject had Re:/Fwd:/(fwd)/[fwd: ...]
    sent: int | None  # Unix seconds of the Date: header
    from_: str
    to: str
    cc: str
    display_from: str
    display_to: str
    message_id: str  # "" when none (or unreadable)
    parents: tuple[str, ...]  # oldest first, the direct parent last

    def row(self) -> tuple:
        """The values of the blobs columns, in COLUMNS order."""
        return (self.subject, int(self.reply), self.sent, self.from_, self.to, self.cc, self.display_from,
                self.display_to, self.message_id, " ".join(self.parents))  # fmt: skip


COLUMNS = ("sort_subject", "sort_reply", "sort_sent", "sort_from", "sort_to", "sort_cc", "sort_display_from",
           "sort_display_to", "sort_message_id", "sort_parents")  # fmt: skip
COLUMN_TYPES = ("text", "int4", "int8", "text", "text", "text", "text", "text", "text", "text")


def _normalise(text: str) -> str:
    """Step 1 after decoding: tabs and line breaks are spaces, runs of spaces one space."""
    out: list[str] = []
    space = False
    for ch in text:
        if ch in " \t\r\n":
            space = True
            continue
        if space and out:
            out.append(" ")
        space = False
        out.append(ch)
    if space and out:
        out.append(" ")
    return "".join(out)


def _skip_wsp(s: str, i: int, end: int) -> int:
    while i < end and s[i] in _WSP:
        i += 1
    return i


def _blob_end(s: str, i: int, end: int) -> int:
    """After a subj-blob ("[" *BLOBCHAR "]" *WSP) starting at i, or -1."""
    if i >= end or s[i] != "[":
        return -1
    j = i + 1
    while j < end and s[j] not in "[]":
        j += 1
    if j >= end or s[j] != "]":
        return -1
    return _skip_wsp(s, j + 1, end)


def _refwd_end(s: str, i: int, end: int) -> int:
    """After a subj-refwd (("re" / "fw" ["d"]) *WSP [subj-blob] ":") starting at i, or -1."""
    head = s[i : i + 3].lower()
    if head.startswith("re"):
        j = i + 2
    elif head == "fwd":
        j = i + 3
    elif head.startswith("fw"):
        j = i + 2
    else:
        return -1
    j = _skip_wsp(s, j, end)
    b = _blob_end(s, j, end)
    if b != -1:
        j = b
    return j + 1 if j < end and s[j] == ":" else -1


def _leader_end(s: str, i: int, end: int) -> int:
    """After a subj-leader ((*subj-blob subj-refwd) / WSP) starting at i, or -1."""
    if i < end and s[i] in _WSP:
        return _skip_wsp(s, i, end)
    j = i
    while True:
        r = _refwd_end(s, j, end)
        if r != -1:
            return r
        b = _blob_end(s, j, end)
        if b == -1:
            return -1
        j = b


def base_subject(raw: str | None) -> tuple[str, bool]:
    """RFC 5256 §2.1: (base subject, is it a reply or forward), before the casemap."""
    if not raw:
        return "", False
    s = _normalise(mime.decode_words(raw[: MAX_SUBJECT * 4])[:MAX_SUBJECT])
    start, end = 0, len(s)
    reply = False
    while True:
        # (2) trailers: "(fwd)" and whitespace at the end
        while end > start:
            if s[end - 1] in _WSP:
                end -= 1
            elif end - start >= 5 and s[end - 5 : end].lower() == "(fwd)":
                end -= 5
                reply = True
            else:
                break
        # (3)-(5) leaders and blobs at the start, until neither is there
        while True:
            j = _leader_end(s, start, end)
            if j != -1:
                if s[start] not in _WSP:
                    reply = True
                start = j
                continue
            b = _blob_end(s, start, end)
            if b != -1 and b < end:  # (4) only if something is left
                start = b
                continue
            break
        # (6) "[fwd:" ... "]" around the rest: take it away and start again at (2)
        if end - start >= 6 and s[start : start + 5].lower() == "[fwd:" and s[end - 1] == "]":
            start, end = start + 5, end - 1
            reply = True
            continue
        return s[start:end], reply


def msg_ids(text: str | None, limit: int, first: bool = False) -> list[str]:
    """The msg-ids ("<...>") in a header's text, in order, at most the last `limit` (with `first`: the
    first one only); ones longer than MAX_ID or with whitespace inside are skipped."""
    if not text:
        return []
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        lt = text.find("<", i)
        if lt == -1:
            break
        gt = text.find(">", lt + 1)
        if gt == -1:
            break
        inner = text[lt + 1 : gt]
        nested = inner.rfind("<")
        if nested != -1:  # "<a <b@c>": the last "<" starts the id
            inner = inner[nested + 1 :]
        if inner and len(inner) <= MAX_ID and not any(c in inner for c in " \t\r\n"):
            out.append(inner)
            if first:
                break
            if len(out) > 2 * limit:
                del out[:limit]
        i = gt + 1
    return out[-limit:]


def sent_time(date_header: str | None) -> int | None:
    """RFC 5256 §2.2: the Date: header's instant; a missing or unreadable zone is UTC."""
    if not date_header:
        return None
    try:
        when = parsedate_to_datetime(date_header)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return int(when.timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _first(addresses: tuple[mime.Address, ...]) -> mime.Address | None:
    for a in addresses:
        if a.host is not None:  # group starts and ends have no host
            return a
    return None


def _local(a: mime.Address) -> str:
    local = a.mailbox or ""
    if len(local) > 1 and local[0] == local[-1] == '"':
        local = mime.unescape(local[1:-1])
    return local


def addr_mailbox(addresses: tuple[mime.Address, ...]) -> str:
    a = _first(addresses)
    return "" if a is None else ascii_upper(_local(a))[:MAX_ADDRESS]


def display(addresses: tuple[mime.Address, ...]) -> str:
    """RFC 5957 §4: the display name if there is one, else the addr-spec."""
    a = _first(addresses)
    if a is None:
        return ""
    name = mime.decode_words(a.name).strip() if a.name else ""
    text = name or (f"{_local(a)}@{a.host}" if a.host else _local(a))
    return text.casefold()[:MAX_ADDRESS]


def of(parsed: mime.ParsedMessage) -> SortKeys:
    env = parsed.envelope
    subject, reply = base_subject(env.subject)
    references = next((v for k, v in parsed.headers if k == "references"), None)
    parents = msg_ids(references, MAX_REFS) or msg_ids(env.in_reply_to, 1, first=True)
    own = msg_ids(env.message_id, 1, first=True)
    return SortKeys(
        subject=ascii_upper(subject),
        reply=reply,
        sent=sent_time(env.date),
        from_=addr_mailbox(env.from_),
        to=addr_mailbox(env.to),
        cc=addr_mailbox(env.cc),
        display_from=display(env.from_),
        display_to=display(env.to),
        message_id=own[0] if own else "",
        parents=tuple(parents),
    )
