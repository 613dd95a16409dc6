"""The SEARCH grammar (RFC 3501 §6.4.4 and §9, RFC 7162 MODSEQ, RFC 4731 RETURN options, RFC 5182 SAVE
and "$", RFC 9394 PARTIAL) into the keys of mailflow.store.search, plus the keys only the session can
resolve (SeqKey, UidKey, RecentKey). No I/O. SORT and THREAD (RFC 5256, RFC 5267 RETURN) take the same
criteria after their own arguments.

`search_args`, `sort_args` and `thread_args` read one command's arguments for `parser.py`. Anything that does not
match the grammar raises `ParseError` (BAD); an unknown CHARSET is NO [BADCHARSET]. The nesting and
the number of keys are bounded (MAX_SEARCH_DEPTH, MAX_SEARCH_KEYS).
"""

from __future__ import annotations

from mailflow.store import search as sk
from mailflow.store.api import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN
from mailflow_imap_pop3.imap import responses as rsp
from mailflow_imap_pop3.imap.lexer import MAX_NUMBER, ParseError, Reader
from mailflow_imap_pop3.imap.syntax import CancelUpdate, RecentKey, Search, SeqKey, Sort, Thread, UidKey

_FLAG_KEYS = {
    "ANSWERED": (ANSWERED, True), "DELETED": (DELETED, True), "DRAFT": (DRAFT, True),
    "FLAGGED": (FLAGGED, True), "SEEN": (SEEN, True), "UNANSWERED": (ANSWERED, False),
    "UNDELETED": (DELETED, False), "UNDRAFT": (DRAFT, False), "UNFLAGGED": (FLAGGED, False),
    "UNSEEN": (SEEN, False),
}  # fmt: skip
_ADDRESS_KEYS = {"BCC": "bcc", "CC": "cc", "FROM": "from", "TO": "to"}
_DATE_KEYS = {
    "BEFORE": ("internal", "before"), "ON": ("internal", "on"), "SINCE": ("internal", "since"),
    "SENTBEFORE": ("sent", "before"), "SENTON": ("sent", "on"), "SENTSINCE": ("sent", "since"),
    "SAVEDBEFORE": ("saved", "before"), "SAVEDON": ("saved", "on"), "SAVEDSINCE": ("saved", "since"),
}  # SAVED*: RFC 8514 §4.2  # fmt: skip
CHARSETS = {"UTF-8": "utf-8", "US-ASCII": "ascii"}
_ARG_KEYS = {*_ADDRESS_KEYS, "SUBJECT", *_DATE_KEYS, "BODY", "TEXT", "HEADER", "KEYWORD", "UNKEYWORD", "LARGER", "SMALLER",
             "NOT", "OR", "UID", "MODSEQ", "EMAILID", "THREADID"}  # fmt: skip
MAX_SEARCH_DEPTH = 100
MAX_SEARCH_KEYS = 1000  # in one SEARCH: each is work for the store; a 64 KiB line holds 16,000 "ALL"


class _SearchParser:
    def __init__(self, r: Reader, charset: str):
        self.r, self.charset, self.depth, self.modseq = r, charset, 0, False
        self.count = 0

    def string(self) -> str:
        raw = self.r.astring()
        try:
            return raw.decode(self.charset)
        except UnicodeDecodeError:
            raise ParseError(f"Search string is not {self.charset}", self.r.tag) from None

    def keys(self) -> object:
        """One or more keys separated by spaces, up to the end of the command or a ')'."""
        keys = [self.key()]
        while self.r.peek() == b" ":
            self.r.pos += 1
            keys.append(self.key())
        return keys[0] if len(keys) == 1 else sk.And(tuple(keys))

    def key(self) -> object:
        r = self.r
        self.depth += 1
        self.count += 1
        if self.depth > MAX_SEARCH_DEPTH:
            raise ParseError("Search criteria nested too deeply", r.tag)
        if self.count > MAX_SEARCH_KEYS:
            raise ParseError(f"Too many search keys (the limit is {MAX_SEARCH_KEYS})", r.tag)
        try:
            c = r.peek()
            if c == b"(":
                r.pos += 1
                inner = self.keys()
                r.expect(b")")
                return inner
            if c.isdigit() or c in (b"*", b"$"):
                return SeqKey(r.seqset())
            name = r.keyword()
            return self.named(name)
        finally:
            self.depth -= 1

    def named(self, name: str) -> object:
        r = self.r
        if name in ("ALL", "SAVEDATESUPPORTED"):  # RFC 8514 §4.2: every mailbox keeps save dates
            return sk.All()
        if name in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[name]
            return sk.Flag(flag, present)
        if r.rev2 and name in ("RECENT", "OLD", "NEW"):  # RFC 9051 removed them with \Recent
            raise ParseError(f"Unknown search key {name} (no \\Recent in IMAP4rev2)", r.tag)
        if name in ("RECENT", "OLD"):
            return RecentKey(name == "RECENT")
        if name == "NEW":
            return sk.And((RecentKey(True), sk.Flag(SEEN, False)))
        if name not in _ARG_KEYS:
            raise ParseError(f"Unknown search key {name[:40]}", r.tag)
        r.sp()
        if name == "SUBJECT":
            return sk.Header("subject", self.string())
        if name in _ADDRESS_KEYS:  # the envelope's addresses too, not only the header's text
            return sk.Address(_ADDRESS_KEYS[name], self.string())
        if name in _DATE_KEYS:
            which, op = _DATE_KEYS[name]
            return sk.Date(which, op, r.date())
        if name in ("BODY", "TEXT"):
            return sk.Text(name.lower(), self.string())
        if name == "HEADER":
            field = r.astring().decode("latin-1").lower()
            r.sp()
            return sk.Header(field, self.string())
        if name in ("KEYWORD", "UNKEYWORD"):
            return sk.Flag(r.atom().decode("latin-1"), name == "KEYWORD")
        if name in ("LARGER", "SMALLER"):
            return sk.Size(name.lower(), r.number())
        if name == "NOT":
            return sk.Not(self.key())
        if name == "OR":
            a = self.key()
            r.sp()
            return sk.Or(a, self.key())
        if name == "UID":
            return UidKey(r.seqset())
        if name in ("EMAILID", "THREADID"):  # RFC 8474 §6: an objectid; we give no THREADID, so none matches
            text = r.atom().decode("latin-1")
            number = rsp.email_id_number(text) if name == "EMAILID" else None
            return sk.EmailId(number) if number is not None else sk.Not(sk.All())
        if name == "MODSEQ":
            self.modseq = True
            if r.peek() == b'"':  # entry-name entry-type-req: "/flags/\\seen" all|shared|priv
                r.quoted()
                r.sp()
                if r.keyword() not in ("ALL", "SHARED", "PRIV"):
                    raise r.error("entry type (all, shared, priv)")
                r.sp()
            return sk.ModSeq(r.number(MAX_NUMBER))
        raise ParseError(f"Unknown search key {name}", r.tag)


_RETURN = {"MIN", "MAX", "ALL", "COUNT", "SAVE", "PARTIAL", "UPDATE", "CONTEXT"}  # RFC 4731 §3.1, 5182, 9394, 5267
_HINTS = {"UPDATE", "CONTEXT"}  # with nothing else asked for, the answer is ALL (RFC 5267 §4.1)
_SORT_CRITERIA = {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
_THREAD_ALGORITHMS = {"ORDEREDSUBJECT", "REFERENCES"}


def _partial_range(r: Reader) -> tuple[int, int]:
    """RFC 9394 partial-range: "n:m" or "-n:-m", either end first; (low, high) with low <= high."""
    text = r.atom()
    a, colon, b = text.partition(b":")
    negative = a.startswith(b"-")
    if not colon or b.startswith(b"-") != negative:
        raise r.error("partial range (1:100 or -1:-100)")
    a, b = (a[1:], b[1:]) if negative else (a, b)
    if not (a.isdigit() and b.isdigit() and 0 < len(a) <= 10 and 0 < len(b) <= 10):
        raise r.error("partial range (1:100 or -1:-100)")
    lo, hi = sorted((int(a), int(b)))
    if lo < 1 or hi > 0xFFFFFFFF:
        raise r.error("partial range within 1..4294967295")
    return (-hi, -lo) if negative else (lo, hi)


def _returns(r: Reader) -> tuple[frozenset[str] | None, tuple[int, int] | None]:
    """RETURN (options) if there is one, then the space after it."""
    if r.peek(7).upper() != b"RETURN ":
        return None, None
    r.pos += 7
    r.expect(b"(")
    options: set[str] = set()
    partial = None
    while not r.maybe(b")"):
        if options or partial:
            r.sp()
        name = r.keyword()
        if name not in _RETURN:
            raise ParseError(f"Unknown return option {name[:40]}", r.tag)
        if name == "PARTIAL":
            r.sp()
            partial = _partial_range(r)
        options.add(name)
    r.sp()
    if not options - _HINTS:
        options.add("ALL")
    return frozenset(options), partial


MAX_CANCEL_TAGS = 64  # in one CANCELUPDATE (a session has max_search_contexts, 8 by default)


def cancel_args(r: Reader) -> CancelUpdate:
    """CANCELUPDATE 1*(SP quoted) (RFC 5267 §5), the tags of the searches to stop updating."""
    tags: list[str] = []
    while r.maybe(b" "):
        if len(tags) == MAX_CANCEL_TAGS:
            raise ParseError(f"Too many tags (the limit is {MAX_CANCEL_TAGS})", r.tag)
        tags.append(r.quoted().decode("latin-1"))
    if not tags:
        raise r.error("quoted tag")
    return CancelUpdate(tuple(tags))


def _charset(r: Reader) -> str:
    charset = r.astring().decode("latin-1").upper()
    if charset not in CHARSETS:
        raise ParseError("Unsupported charset", r.tag, "NO", "BADCHARSET (UTF-8 US-ASCII)")
    return charset


def _criteria(r: Reader, charset: str | None, returns, partial) -> Search:
    p = _SearchParser(r, CHARSETS.get(charset or "UTF-8", "utf-8"))
    key = p.keys()
    return Search(key, charset, p.modseq, returns, partial)


def search_args(r: Reader) -> Search:
    """The arguments of SEARCH and UID SEARCH, after the command name."""
    r.sp()
    returns, partial = _returns(r)
    charset = None
    if r.peek(8).upper() == b"CHARSET ":
        r.pos += 8
        charset = _charset(r)
        r.sp()
    return _criteria(r, charset, returns, partial)


def sort_args(r: Reader) -> Sort:
    """SORT [RETURN (...)] (criteria) charset search-key... (RFC 5256 §3, RFC 5267 §3)."""
    r.sp()
    returns, partial = _returns(r)
    r.expect(b"(")
    criteria: list[tuple[str, bool]] = []
    while True:
        name = r.keyword()
        reverse = name == "REVERSE"
        if reverse:
            r.sp()
            name = r.keyword()
        if name not in _SORT_CRITERIA:
            raise ParseError(f"Unknown sort criterion {name[:40]}", r.tag)
        criteria.append((name.lower(), reverse))
        if len(criteria) > len(_SORT_CRITERIA):
            raise ParseError("Too many sort criteria", r.tag)
        if r.maybe(b")"):
            break
        r.sp()
    r.sp()
    charset = _charset(r)
    r.sp()
    return Sort(tuple(criteria), _criteria(r, charset, returns, partial))


def thread_args(r: Reader) -> Thread:
    """THREAD algorithm charset search-key... (RFC 5256 §3)."""
    r.sp()
    algorithm = r.keyword()
    if algorithm not in _THREAD_ALGORITHMS:
        raise ParseError(f"Unknown threading algorithm {algorithm[:40]}", r.tag)
    r.sp()
    charset = _charset(r)
    r.sp()
    return Thread(algorithm.lower(), _criteria(r, charset, None, None))
