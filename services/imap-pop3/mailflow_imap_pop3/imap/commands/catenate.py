"""CATENATE (RFC 4469): the messages of an APPEND made of TEXT literals and URLs of the user's own messages.

A URL (imap/urls.py) is one of the user's messages or a section of it: relative ("/INBOX;UIDVALIDITY=7/
;UID=3/;SECTION=1.2", or ";UID=3" against the selected mailbox) or the imap:// form naming this user
and this server (`hostname`). The bytes come from the store's BODY[section] (fetch.body_sections, the
FETCH path), asked with this session's principal: the store answers only about the user's own
mailboxes, so no URL reaches another user's mail, whatever it says. The first URL that cannot be used
ends the APPEND with NO [BADURL url] (RFC 4469 §5): a URL of another user or server, a mailbox that
does not exist, a UIDVALIDITY that changed, a message expunged, a section-spec the store refuses. (A part number
that is not in the message gives an empty part, as FETCH BODY[9] does.) A message
over APPENDLIMIT, or all of one APPEND's messages over framing.command_budget, is NO [TOOBIG] and
stops the assembly there (nothing more is fetched). Nothing is stored unless every message could be
made (the store's append_many is all or nothing, as for MULTIAPPEND).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from mailflow.errors import Invalid, NotFound
from mailflow.store.api import MailboxStatus
from mailflow_imap_pop3.imap import errors, urls
from mailflow_imap_pop3.imap.commands.fetch import body_sections
from mailflow_imap_pop3.imap.framing import command_budget
from mailflow_imap_pop3.imap.syntax import AppendItem, CatUrl

if TYPE_CHECKING:
    from mailflow_imap_pop3.imap.session import Session

Message = tuple[bytes, frozenset[str], datetime | None]


def _badurl(url: str, why: str) -> errors.ImapError:
    return errors.no(f"CATENATE refused: {why}", f"BADURL {urls.echo(url)}")


def _toobig(limit: int) -> errors.ImapError:
    return errors.no(f"Message too big (the limit is {limit} octets)", "TOOBIG")


async def messages(s: Session, items: tuple[AppendItem, ...]) -> list[Message]:
    """Every item as (message, flags, date); CATENATE items assembled."""
    settings = s.ctx.settings
    limit, budget = (
        settings.max_append_bytes,
        command_budget(settings.max_append_bytes, settings.max_line_bytes),
    )
    boxes: dict[str, MailboxStatus] = {}  # a mailbox is looked up once per command
    out: list[Message] = []
    total = 0
    for item in items:
        if item.parts is None:
            data = item.message
        else:
            pieces: list[bytes] = []
            size = 0
            for part in item.parts:
                piece = part if isinstance(part, bytes) else await _url_bytes(s, part, boxes)
                size += len(piece)
                if size > limit or total + size > budget:
                    raise _toobig(limit)
                pieces.append(piece)
            data = b"".join(pieces)
        total += len(data)
        out.append((data, frozenset(item.flags), item.date))
    return out


async def _url_bytes(s: Session, part: CatUrl, boxes: dict[str, MailboxStatus]) -> bytes:
    base = (s.view.name, s.view.uidvalidity) if s.view is not None else None
    try:
        url = urls.parse(part.url, base)
    except urls.BadUrl as exc:
        raise _badurl(part.url, str(exc)) from None
    p = s.principal
    if url.user is not None:
        if url.user.casefold() != p.address.casefold():
            raise _badurl(part.url, "not your mailbox")
        if url.host != s.ctx.settings.hostname.lower():
            raise _badurl(part.url, "not this server")
    st = boxes.get(url.mailbox)
    if st is None:
        try:
            st = boxes[url.mailbox] = await s.store.status(p, url.mailbox)
        except NotFound:
            raise _badurl(part.url, "no such mailbox") from None
    if url.uidvalidity is not None and url.uidvalidity != st.uidvalidity:
        raise _badurl(part.url, "UIDVALIDITY changed")
    try:
        got = await body_sections(s.store, p, st.id, [url.uid], url.section.spec())
    except (Invalid, NotFound):
        raise _badurl(part.url, "no such section") from None
    data = got.get(url.uid)
    if data is None:
        raise _badurl(part.url, "no such message")
    if url.partial is not None:
        offset, length = url.partial
        data = data[offset : None if length is None else offset + length]
    return data
