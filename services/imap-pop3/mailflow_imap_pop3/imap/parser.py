"""IMAP4rev1 commands from framed bytes: the grammar of RFC 3501 §9 and of the extensions offered, into the
typed arguments of `syntax.py`. No I/O.

`parse(data)` takes one command as `framing.Framer` cut it and returns a `Command`. Anything that does
not match the grammar raises `ParseError` (the session answers BAD, or NO [BADCHARSET] for an unknown
SEARCH charset); nothing here raises anything else for any input. A mailbox name that is not valid
modified UTF-7 (RFC 3501 §5.1.3) in a command otherwise well formed is not syntax: the Command carries
`invalid_name` and the session answers NO [NONEXISTENT] (NO [CANNOT] for a name CREATE or RENAME would
make), once the command is allowed in the state; such a LIST/LSUB pattern or reference matches nothing.
"""

from __future__ import annotations

from mailflow_imap_pop3.imap import mutf7
from mailflow_imap_pop3.imap.lexer import ATOM, BASE64, FETCH_NAME, MAX_NUMBER, TAG, ParseError, Reader
from mailflow_imap_pop3.imap.search_parser import cancel_args, search_args, sort_args, thread_args
from mailflow_imap_pop3.imap.syntax import (
    NOTIFY_EVENTS,
    STAR,
    Append,
    AppendItem,
    Authenticate,
    CatUrl,
    Command,
    Compress,
    CopyMove,
    Enable,
    Fetch,
    FetchAtt,
    Id,
    ListCmd,
    Login,
    MailboxArg,
    Notify,
    NotifyGroup,
    Qresync,
    QuotaRootArg,
    Rename,
    Section,
    Select,
    SeqArg,
    SeqSet,
    Status,
    Store,
)


def _none(r: Reader) -> None:
    return None


def _login(r: Reader) -> Login:
    r.sp()
    user = r.text()
    r.sp()
    return Login(user, r.text())


def _authenticate(r: Reader) -> Authenticate:
    r.sp()
    mech = r.keyword()
    initial = None
    if r.maybe(b" "):
        initial = r.match(BASE64, "base64").group() or b"="
    return Authenticate(mech, initial)


def _select(r: Reader) -> Select:
    r.sp()
    mailbox = r.mailbox()
    condstore = False
    qresync = None
    if r.maybe(b" "):

        def param() -> str:
            nonlocal condstore, qresync
            word = r.keyword()
            if word == "CONDSTORE":
                condstore = True
            elif word == "QRESYNC" and qresync is None:
                r.sp()
                qresync = _qresync(r)
            else:
                raise ParseError(f"Unknown SELECT parameter {word}", r.tag)
            return word

        r.paren(param)
    return Select(mailbox, condstore, qresync)


def _qresync(r: Reader) -> Qresync:
    """The QRESYNC parameter: uidvalidity, MODSEQ, known UIDs, match data (RFC 7162 §7). The
    sets are bounded as every sequence set is (MAX_SEQ_RANGES), `*` in them is BAD, and so are match data
    whose two sets do not name as many numbers (§3.2.5.2 pairs them one to one)."""
    r.expect(b"(")
    uidvalidity = r.nz_number()
    r.sp()
    modseq = r.number(MAX_NUMBER)
    known = match = None
    if r.maybe(b" "):
        if r.peek() != b"(":
            known = _no_star(r, r.seqset())
            if r.maybe(b" "):
                match = _seq_match(r)
        else:
            match = _seq_match(r)
    r.expect(b")")
    return Qresync(uidvalidity, modseq, known, match)


def _seq_match(r: Reader) -> tuple[SeqSet, SeqSet]:
    r.expect(b"(")
    seqs = _no_star(r, r.seqset())
    r.sp()
    uids = _no_star(r, r.seqset())
    r.expect(b")")
    if seqs.count() != uids.count():
        raise ParseError("QRESYNC: the sequence and UID sets name different numbers of messages", r.tag)
    return seqs, uids


def _no_star(r: Reader, seqset: SeqSet) -> SeqSet:
    if any(STAR in pair for pair in seqset.ranges):
        raise ParseError("QRESYNC: '*' is not allowed in known UIDs or sequence match data", r.tag)
    return seqset


_SPECIAL_USE = {
    x.upper(): x for x in ("\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive", "\\All", "\\Flagged")
}


def _create(r: Reader) -> MailboxArg:
    r.sp()
    mailbox = r.mailbox(new=True)
    use = None
    if r.maybe(b" "):
        r.expect(b"(")
        r.expect(b"USE")
        r.sp()
        uses = r.paren(lambda: _use_flag(r))
        r.expect(b")")
        if len(uses) != 1:
            raise ParseError("Exactly one special-use attribute per mailbox", r.tag, "NO", "USEATTR")
        use = uses[0]
    return MailboxArg(mailbox, use)


def _use_flag(r: Reader) -> str:
    r.expect(b"\\")
    name = "\\" + r.atom().decode("latin-1")
    if name.upper() not in _SPECIAL_USE:
        raise ParseError(f"Unknown special-use attribute {name}", r.tag, "NO", "USEATTR")
    return _SPECIAL_USE[name.upper()]


def _mailbox_arg(r: Reader) -> MailboxArg:
    r.sp()
    return MailboxArg(r.mailbox())


def _quota_root(r: Reader) -> QuotaRootArg:
    r.sp()
    return QuotaRootArg(r.text())


def _rename(r: Reader) -> Rename:
    r.sp()
    old = r.mailbox()
    r.sp()
    return Rename(old, r.mailbox(new=True))


_LIST_SELECT = {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}
_LIST_RETURN = {"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"}
STATUS_ITEMS = {
    "MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE",
    "DELETED", "DELETED-STORAGE",  # RFC 9051 §6.3.11, RFC 9208 §4.4 (QUOTA=RES-STORAGE)
    "MAILBOXID",  # RFC 8474 §4
}  # fmt: skip


def _status_items(r: Reader) -> tuple[str, ...]:
    items = tuple(r.paren(r.keyword))
    for item in items:
        if item not in STATUS_ITEMS or (r.rev2 and item == "RECENT"):  # RFC 9051 has no \Recent
            raise ParseError(f"Unknown STATUS item {item}", r.tag)
    return items


MAX_LIST_PATTERNS = 64  # RFC 5258 §3 allows several; each costs a pass over the user's names


def _list(r: Reader) -> ListCmd:
    r.sp()
    select: frozenset[str] = frozenset()
    extended = False
    if r.peek() == b"(":
        select = frozenset(r.paren(r.keyword, allow_empty=True))
        if select - _LIST_SELECT:
            raise ParseError(f"Unknown LIST selection option {sorted(select - _LIST_SELECT)[0]}", r.tag)
        if "RECURSIVEMATCH" in select and not select - {"RECURSIVEMATCH", "REMOTE"}:
            raise ParseError("RECURSIVEMATCH needs another selection option", r.tag)
        extended = True
        r.sp()
    reference = _reference(r)
    r.sp()
    if r.peek() == b"(":
        patterns = tuple(r.paren(r.list_mailbox))
        if len(patterns) > MAX_LIST_PATTERNS:  # each is matched against every name
            raise ParseError(f"Too many LIST patterns (the limit is {MAX_LIST_PATTERNS})", r.tag)
        extended = True
    else:
        patterns = (r.list_mailbox(),)
    patterns = () if reference is None else tuple(p for p in patterns if p is not None)
    returns: set[str] = set()
    status: tuple[str, ...] = ()
    if r.maybe(b" "):
        r.expect(b"RETURN")
        r.sp()
        extended = True

        def option() -> str:
            nonlocal status
            name = r.keyword()
            if name == "STATUS":
                r.sp()
                status = _status_items(r)
            elif name not in _LIST_RETURN:
                raise ParseError(f"Unknown LIST return option {name}", r.tag)
            return name

        returns = set(r.paren(option, allow_empty=True))
    if "SUBSCRIBED" in select:
        returns.add("SUBSCRIBED")
    return ListCmd(reference or "", patterns, select, frozenset(returns), status, False, extended)


def _reference(r: Reader) -> str | None:
    """A LIST/LSUB reference name; None when it is not modified UTF-7 (the command matches nothing)."""
    try:
        return mutf7.decode_name(r.astring(), r.rev2)
    except ValueError:
        return None


def _lsub(r: Reader) -> ListCmd:
    """`patterns` is () when the reference or the pattern is not modified UTF-7: nothing matches."""
    r.sp()
    reference = _reference(r)
    r.sp()
    pattern = r.list_mailbox()
    patterns = (pattern,) if reference is not None and pattern is not None else ()
    return ListCmd(reference or "", patterns, lsub=True)


def _status(r: Reader) -> Status:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    return Status(mailbox, _status_items(r))


def _append_item(r: Reader) -> AppendItem:
    flags: tuple[str, ...] = ()
    when = None
    if r.peek() == b"(":
        flags = r.flag_list()
        r.sp()
    if r.peek() == b'"':
        when = r.date_time()
        r.sp()
    if r.maybe(b"CATENATE "):
        return AppendItem(flags, when, b"", tuple(r.paren(lambda: _cat_part(r))))
    if r.peek() not in (b"{", b"~"):
        raise r.error("message literal")
    return AppendItem(flags, when, r.literal())


# URL parts in one APPEND (all its CATENATE items together): each costs a store round trip. TEXT parts
# are literals, which the framer bounds (MAX_LITERALS).
MAX_CATENATE_URLS = 64


def _cat_part(r: Reader) -> bytes | CatUrl:
    """RFC 4469 cat-part: TEXT SP literal (literal8 too, RFC 3516) / URL SP astring."""
    if r.maybe(b"TEXT "):
        if r.peek() not in (b"{", b"~"):
            raise r.error("literal")
        return r.literal()
    r.expect(b"URL ")
    return CatUrl(r.astring().decode("latin-1"))


def _append(r: Reader) -> Append:
    """APPEND mailbox [flags] [date] (literal / CATENATE (parts)), then more of those (MULTIAPPEND, RFC
    3502); how many and how large the framer bounds (every literal of one command counts against
    APPENDLIMIT), and at most MAX_CATENATE_URLS URL parts in all (NO [LIMIT] beyond)."""
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    items = [_append_item(r)]
    while r.maybe(b" "):
        items.append(_append_item(r))
    urls = sum(isinstance(p, CatUrl) for item in items for p in item.parts or ())
    if urls > MAX_CATENATE_URLS:
        raise ParseError(f"Too many CATENATE URLs (the limit is {MAX_CATENATE_URLS})", r.tag, "NO", "LIMIT")
    return Append(mailbox, tuple(items))


def _copy(r: Reader) -> CopyMove:
    r.sp()
    seqset = r.seqset()
    r.sp()
    return CopyMove(seqset, r.mailbox())


def _seq_arg(r: Reader) -> SeqArg:
    r.sp()
    return SeqArg(r.seqset())


_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE_ATTS = {
    "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT", "BODY",
    "BODYSTRUCTURE", "UID", "MODSEQ", "EMAILID", "THREADID", "SAVEDATE",
}  # fmt: skip
_SECTION_TEXT = {"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"}
MAX_SECTION_PARTS = 100  # numbers in a section's part path; messages nest at most 50 deep (mailflow.mime)


def section(r: Reader) -> Section:
    """RFC 3501 "[" [section-spec] "]", as FETCH BODY[...] and IMAP URLs' ;SECTION= (urls.py) write it."""
    r.expect(b"[")
    part: list[int] = []
    text = ""
    fields: tuple[str, ...] = ()
    if r.peek().isdigit():
        part.append(r.nz_number())
        while r.peek(2)[:1] == b"." and r.peek(2)[1:].isdigit():
            if len(part) == MAX_SECTION_PARTS:
                raise ParseError(f"Section part numbers nested too deeply (the limit is {MAX_SECTION_PARTS})", r.tag)
            r.pos += 1
            part.append(r.nz_number())
        if r.maybe(b"."):
            text = r.match(FETCH_NAME, "section text").group().decode().upper()
    elif r.peek() != b"]":
        text = r.match(FETCH_NAME, "section text").group().decode().upper()
    if text and (text not in _SECTION_TEXT or (text == "MIME" and not part)):
        raise r.error("section text (HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME)")
    if text.startswith("HEADER.FIELDS"):
        r.sp()
        fields = tuple(f.decode("latin-1").upper() for f in r.paren(r.astring))
        for f in fields:
            if not f or any(c <= " " or c in ':()"\\{' or c > "~" for c in f):
                raise r.error("header field name")
    r.expect(b"]")
    return Section(tuple(part), text, fields)


def _section_binary(r: Reader) -> Section:
    """RFC 3516 section-binary: "[" [section-part] "]", part numbers only."""
    r.expect(b"[")
    part: list[int] = []
    if r.peek() != b"]":
        part.append(r.nz_number())
        while r.maybe(b"."):
            if len(part) == MAX_SECTION_PARTS:
                raise ParseError(f"Section part numbers nested too deeply (the limit is {MAX_SECTION_PARTS})", r.tag)
            part.append(r.nz_number())
    r.expect(b"]")
    return Section(tuple(part))


def _partial(r: Reader) -> tuple[int, int] | None:
    if not r.maybe(b"<"):
        return None
    offset = r.number()
    r.expect(b".")
    partial = (offset, r.nz_number())
    r.expect(b">")
    return partial


def _fetch_att(r: Reader) -> FetchAtt:
    name = r.match(FETCH_NAME, "fetch attribute").group().decode().upper()
    if name in ("BODY", "BODY.PEEK") and r.peek() == b"[":
        return FetchAtt("BODY[]", section(r), name == "BODY.PEEK", _partial(r))
    if name in ("BINARY", "BINARY.PEEK"):  # RFC 3516
        return FetchAtt("BINARY[]", _section_binary(r), name == "BINARY.PEEK", _partial(r))
    if name == "BINARY.SIZE":
        return FetchAtt("BINARY.SIZE", _section_binary(r), peek=True)  # reading a size sets no \Seen
    if name not in _SIMPLE_ATTS:
        raise ParseError(f"Unknown FETCH attribute {name}", r.tag)
    return FetchAtt(name)


def _fetch(r: Reader) -> Fetch:
    r.sp()
    seqset = r.seqset()
    r.sp()
    if r.peek() == b"(":
        atts = tuple(r.paren(lambda: _fetch_att(r)))
    else:
        save = r.pos
        word = r.match(FETCH_NAME, "fetch attribute").group().decode().upper()
        if word in _MACROS:
            atts = tuple(FetchAtt(n) for n in _MACROS[word])
        else:
            r.pos = save
            atts = (_fetch_att(r),)
    changed_since = None
    vanished = False
    if r.maybe(b" "):

        def modifier() -> str:
            nonlocal changed_since, vanished
            word = r.keyword()
            if word == "CHANGEDSINCE" and changed_since is None:
                r.sp()
                changed_since = r.number(MAX_NUMBER)
            elif word == "VANISHED" and not vanished:  # RFC 7162 §3.2.6
                vanished = True
            else:
                raise ParseError(f"Unknown FETCH modifier {word}", r.tag)
            return word

        r.paren(modifier)
        if vanished and changed_since is None:
            raise ParseError("VANISHED needs CHANGEDSINCE (RFC 7162 §3.2.6)", r.tag)
    return Fetch(seqset, atts, changed_since, vanished)


def _store(r: Reader) -> Store:
    r.sp()
    seqset = r.seqset()
    r.sp()
    unchanged_since = None
    if r.peek() == b"(":
        r.expect(b"(UNCHANGEDSINCE ")
        unchanged_since = r.number(MAX_NUMBER)
        r.expect(b")")
        r.sp()
    op = "add" if r.maybe(b"+") else "remove" if r.maybe(b"-") else "replace"
    r.expect(b"FLAGS")
    silent = r.maybe(b".SILENT")
    r.sp()
    if r.peek() == b"(":
        flags = r.flag_list()
    else:
        flags = [r.flag()]
        while r.maybe(b" "):
            flags.append(r.flag())
        flags = tuple(flags)
    return Store(seqset, op, silent, flags, unchanged_since)


def _id(r: Reader) -> Id:
    r.sp()
    if r.maybe(b"NIL"):
        return Id(None)
    items: list[bytes | None] = r.paren(lambda: r.nstring(), allow_empty=True)
    if len(items) % 2 or len(items) > 60:
        raise ParseError("ID takes up to 30 field-value pairs", r.tag)
    pairs = []
    for k, v in zip(items[::2], items[1::2], strict=True):
        if k is None or len(k) > 30 or (v is not None and len(v) > 1024):
            raise ParseError("ID field names are strings of up to 30 octets, values up to 1024", r.tag)
        pairs.append((k.decode("utf-8", "replace"), None if v is None else v.decode("utf-8", "replace")))
    return Id(tuple(pairs))


def _compress(r: Reader) -> Compress:
    r.sp()
    return Compress(r.keyword())


def _enable(r: Reader) -> Enable:
    caps = []
    while r.maybe(b" "):
        caps.append(r.keyword())
    if not caps:
        raise r.error("capability")
    return Enable(tuple(caps))


_NOTIFY_FILTERS = {"SELECTED", "SELECTED-DELAYED", "INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE", "MAILBOXES"}
_EVENT_NAMES = {e.upper(): e for e in NOTIFY_EVENTS}
_MESSAGE_EVENTS = {"MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange"}
MAX_NOTIFY_GROUPS = 16  # event groups in one NOTIFY SET
MAX_NOTIFY_FETCH = 16  # MessageNew's fetch-att: what a new message costs is bounded per message


def _notify(r: Reader) -> Notify:
    """RFC 5465 §8: NOTIFY NONE / NOTIFY SET [STATUS] event-group *(SP event-group). BAD for what the
    grammar, §5 and §6.1 forbid (MessageNew without MessageExpunge or the reverse, FlagChange without
    both, fetch-att for mailboxes not selected, other than message events for SELECTED, SELECTED twice,
    a fetch-att that would set \\Seen); an event we do not know is kept for the handler, whose answer
    is NO [BADEVENT]."""
    r.sp()
    if r.maybe(b"NONE"):
        return Notify(None)
    r.expect(b"SET")
    status = r.maybe(b" STATUS")
    groups: list[NotifyGroup] = []
    while r.maybe(b" "):
        if len(groups) == MAX_NOTIFY_GROUPS:
            raise ParseError(f"Too many NOTIFY event groups (the limit is {MAX_NOTIFY_GROUPS})", r.tag)
        groups.append(_notify_group(r))
    if not groups:
        raise r.error("event group")
    if sum(g.filter.startswith("SELECTED") for g in groups) > 1:
        raise ParseError("One of SELECTED and SELECTED-DELAYED, once (RFC 5465 §6.1)", r.tag)
    return Notify(tuple(groups), status)


def _notify_group(r: Reader) -> NotifyGroup:
    r.expect(b"(")
    filt = r.keyword()
    if filt not in _NOTIFY_FILTERS:
        raise ParseError(f"Unknown NOTIFY mailbox filter {filt[:40]}", r.tag)
    mailboxes: frozenset[str] = frozenset()
    if filt in ("SUBTREE", "MAILBOXES"):
        r.sp()
        mailboxes = frozenset(r.paren(r.mailbox) if r.peek() == b"(" else (r.mailbox(),))
    r.sp()
    events: list[str] = []
    fetch: list[FetchAtt] = []
    if not r.maybe(b"NONE"):

        def event() -> str:
            name = r.atom().decode("latin-1")
            canon = _EVENT_NAMES.get(name.upper(), name[:40])
            if canon == "MessageNew" and r.peek(2) == b" (":
                r.pos += 1
                fetch.extend(r.paren(lambda: _fetch_att(r)))
            return canon

        events = r.paren(event)
    r.expect(b")")
    if ("MessageNew" in events) != ("MessageExpunge" in events):
        raise ParseError("MessageNew and MessageExpunge go together (RFC 5465 §5)", r.tag)
    if ("FlagChange" in events or "AnnotationChange" in events) and "MessageNew" not in events:
        raise ParseError("FlagChange needs MessageNew and MessageExpunge (RFC 5465 §5.1)", r.tag)
    if filt.startswith("SELECTED") and set(events) - _MESSAGE_EVENTS:
        raise ParseError("SELECTED takes message events only (RFC 5465 §6.1)", r.tag)
    if fetch and not filt.startswith("SELECTED"):
        raise ParseError("MessageNew fetch attributes only for the selected mailbox", r.tag)
    if len(fetch) > MAX_NOTIFY_FETCH:
        raise ParseError(f"Too many MessageNew fetch attributes (the limit is {MAX_NOTIFY_FETCH})", r.tag)
    if any((a.section is not None and not a.peek) or a.name in ("RFC822", "RFC822.TEXT") for a in fetch):
        raise ParseError("MessageNew fetch attributes must not set \\Seen: use BODY.PEEK", r.tag)
    return NotifyGroup(filt, mailboxes, tuple(dict.fromkeys(events)), tuple(fetch))


# name -> argument parser; the session's COMMANDS table says who may run what, when.
ARGUMENTS = {
    "CAPABILITY": _none, "NOOP": _none, "LOGOUT": _none, "STARTTLS": _none, "AUTHENTICATE": _authenticate,
    "LOGIN": _login, "SELECT": _select, "EXAMINE": _select, "CREATE": _create, "DELETE": _mailbox_arg,
    "RENAME": _rename, "SUBSCRIBE": _mailbox_arg, "UNSUBSCRIBE": _mailbox_arg, "LIST": _list, "LSUB": _lsub,
    "STATUS": _status, "APPEND": _append, "CHECK": _none, "CLOSE": _none, "EXPUNGE": _none,
    "SEARCH": search_args, "FETCH": _fetch, "STORE": _store, "COPY": _copy, "MOVE": _copy, "UNSELECT": _none,
    "IDLE": _none, "NAMESPACE": _none, "ID": _id, "ENABLE": _enable,
    "GETQUOTA": _quota_root, "GETQUOTAROOT": _mailbox_arg, "COMPRESS": _compress,
    "UID COPY": _copy, "UID MOVE": _copy, "UID FETCH": _fetch, "UID SEARCH": search_args, "UID STORE": _store,
    "UID EXPUNGE": _seq_arg, "NOTIFY": _notify, "SORT": sort_args, "UID SORT": sort_args, "THREAD": thread_args,
    "UID THREAD": thread_args, "CANCELUPDATE": cancel_args,
}  # fmt: skip


def parse(data: bytes, rev2: bool = False) -> Command:
    """One framed command (see Framer) -> Command. ParseError (with the tag when there is one) otherwise.
    `rev2`: the session enabled IMAP4rev2 (mailbox names in UTF-8, no \\Recent grammar)."""
    m = TAG.match(data)
    if m is None or (m.end() < len(data) and data[m.end() : m.end() + 1] != b" "):
        raise ParseError("Missing or invalid tag", "*")
    tag = m.group().decode("latin-1")
    if m.end() == len(data):
        raise ParseError("Missing command", tag)
    r = Reader(data, m.end() + 1, tag, rev2)
    name = r.keyword() if ATOM.match(data, r.pos) else ""
    if not name:
        raise ParseError("Missing command", tag)
    if name == "UID":
        r.sp()
        name = "UID " + r.keyword()
    fn = ARGUMENTS.get(name)
    if fn is None:
        raise ParseError(f"Unknown command {name[:40]}", tag)
    args = fn(r)
    r.end()
    return Command(tag, name, args, r.bad_name)
