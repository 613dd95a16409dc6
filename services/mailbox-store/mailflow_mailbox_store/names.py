"""Names the store accepts, in their one canonical form: domains, addresses, mailbox names, flags.

Every function raises mailflow.errors.Invalid for input that can never be accepted, with a reason the
client may see. Domains are lower-case A-labels without a trailing dot; addresses are lower-case
(local parts are compared case-insensitively here, as almost every mail system does); mailbox names
are UTF-8 with "/" between levels and "INBOX" spelled so whatever case it was given in.
"""

from __future__ import annotations

import re

from mailflow.errors import Invalid
from mailflow.store.api import ANSWERED, DELETED, DELIMITER, DRAFT, FLAGGED, SEEN

FLAG_BITS = {SEEN: 1, ANSWERED: 2, FLAGGED: 4, DELETED: 8, DRAFT: 16}
BIT_FLAGS = tuple((bit, name) for name, bit in FLAG_BITS.items())
SEEN_BIT, DELETED_BIT = FLAG_BITS[SEEN], FLAG_BITS[DELETED]
_FLAG_BY_LOWER = {name.lower(): name for name in FLAG_BITS}
RECENT = "\\Recent"
# A user's keywords are bits 0..57 of messages.keywords, so flags + keywords * 32 (listings.py) still
# fits a signed 64-bit integer.
MAX_KEYWORDS = 58

SPECIAL_USES = ("\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive", "\\All", "\\Flagged")
# RFC 6154 mailboxes every new user gets (INBOX first).
DEFAULT_MAILBOXES = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_ATOM_SPECIALS = set('(){ %*"\\]') | {chr(c) for c in range(0x20)} | {"\x7f"}
MAX_MAILBOX_NAME = 1000  # bytes of UTF-8
MAX_DEPTH = 32


def domain(name: str) -> str:
    d = name.strip().rstrip(".").lower()
    if not d:
        raise Invalid("empty domain")
    if not d.isascii():
        try:
            d = d.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise Invalid(f"not a domain name: {name!r}") from exc
    if len(d) > 253 or not all(_LABEL.match(label) for label in d.split(".")):
        raise Invalid(f"not a domain name: {name!r}")
    return d


def address(addr: str) -> str:
    """'Alice@Example.TEST' -> 'alice@example.test'. '<a@b>' loses its brackets."""
    a = addr.strip()
    if a.startswith("<") and a.endswith(">"):
        a = a[1:-1]
    local, at, dom = a.rpartition("@")
    if not at or not local:
        raise Invalid(f"not an address: {addr!r}")
    if len(local.encode()) > 64 or any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in local):
        raise Invalid(f"not an address: {addr!r}")
    return f"{local.lower()}@{domain(dom)}"


def alias_address(addr: str) -> str:
    """An alias is an address, or "@domain" for the domain's catch-all."""
    a = addr.strip()
    if a.startswith("@"):
        return "@" + domain(a[1:])
    return address(a)


def split(addr: str) -> tuple[str, str]:
    local, _, dom = addr.rpartition("@")
    return local, dom


def mailbox(name: str) -> str:
    """Check a mailbox name and give its canonical form ("inbox/x" -> "INBOX/x")."""
    if not isinstance(name, str) or not name:
        raise Invalid("empty mailbox name")
    if name.startswith(DELIMITER) or name.endswith(DELIMITER) or DELIMITER * 2 in name:
        raise Invalid("mailbox name has an empty level")
    if any(ord(c) < 0x20 or c in "\x7f*%" for c in name):
        raise Invalid("mailbox name has a control character or a wildcard")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_MAILBOX_NAME or name.count(DELIMITER) >= MAX_DEPTH:
        raise Invalid("mailbox name too long or too deep")
    first, sep, rest = name.partition(DELIMITER)
    if first.upper() == "INBOX":
        return "INBOX" + sep + rest
    return name


def parents(name: str) -> list[str]:
    """'a/b/c' -> ['a', 'a/b']."""
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


def system_flag(flag: str) -> str | None:
    """The canonical spelling of a system flag, or None for a keyword."""
    return _FLAG_BY_LOWER.get(flag.lower())


def keyword(flag: str) -> str:
    if not flag or len(flag) > 255 or any(c in _ATOM_SPECIALS or ord(c) > 0x7E for c in flag):
        raise Invalid(f"not a keyword: {flag!r}")
    return flag


def split_flags(flags) -> tuple[int, list[str]]:
    """System flags as bits and the keywords (checked). \\Recent is dropped (RFC 3501: not settable)."""
    bits = 0
    keywords = []
    for f in flags:
        sys_flag = system_flag(f)
        if sys_flag is not None:
            bits |= FLAG_BITS[sys_flag]
        elif f.lower() == RECENT.lower():
            continue
        elif f.startswith("\\"):
            raise Invalid(f"unknown system flag {f}")
        else:
            keywords.append(keyword(f))
    return bits, keywords
