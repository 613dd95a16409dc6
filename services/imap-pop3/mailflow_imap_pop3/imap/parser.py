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
from mailflow_imap_pop3.imap.search_parser import search_args, sort_args, thread_args
from mailflow_imap_pop3.imap.syntax import (
    Append,
    AppendItem,
    Authenticate,
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
    QuotaRootArg,
    Rename,
    Section,
    Select,
    SeqArg,
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
    if r.maybe(b" "):
        for param in r.paren(r.keyword):
            if param != "CONDSTORE":
                raise ParseError(f"Unknown SELECT parameter {param}", r.tag)
            condstore = True
    return Select(mailbox, condstore)


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
        if item not in STATUS_ITEMS:
            raise ParseError(f"Unknown STATUS item {item}", r.tag)
    return items


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
        return mutf7.decode(r.astring())
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
    if r.peek() not in (b"{", b"~"):
        raise r.error("message literal")
    return AppendItem(flags, when, r.literal())


def _append(r: Reader) -> Append:
    """APPEND mailbox [flags] [date] literal, then more of [flags] [date] literal (MULTIAPPEND, RFC 3502);
    how many and how large the framer bounds (every literal of one command counts against APPENDLIMIT)."""
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    items = [_append_item(r)]
    while r.maybe(b" "):
        items.append(_append_item(r))
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
    "BODYSTRUCTURE", "UID", "MODSEQ", "EMAILID", "THREADID",
}  # fmt: skip
_SECTION_TEXT = {"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"}
MAX_SECTION_PARTS = 100  # numbers in a section's part path; messages nest at most 50 deep (mailflow.mime)


def _section(r: Reader) -> Section:
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
        section = _section(r)
        return FetchAtt("BODY[]", section, name == "BODY.PEEK", _partial(r))
    if name in ("BINARY", "BINARY.PEEK"):  # RFC 3516
        section = _section_binary(r)
        return FetchAtt("BINARY[]", section, name == "BINARY.PEEK", _partial(r))
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
    if r.maybe(b" "):

        def modifier() -> int:
            nonlocal changed_since
            r.expect(b"CHANGEDSINCE")
            r.sp()
            changed_since = r.number(MAX_NUMBER)
            return changed_since

        r.paren(modifier)
    return Fetch(seqset, atts, changed_since)


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
    "UID EXPUNGE": _seq_arg, "SORT": sort_args, "UID SORT": sort_args, "THREAD": thread_args,
    "UID THREAD": thread_args,
}  # fmt: skip


def parse(data: bytes) -> Command:
    """One framed command (see Framer) -> Command. ParseError (with the tag when there is one) otherwise."""
    m = TAG.match(data)
    if m is None or (m.end() < len(data) and data[m.end() : m.end() + 1] != b" "):
        raise ParseError("Missing or invalid tag", "*")
    tag = m.group().decode("latin-1")
    if m.end() == len(data):
        raise ParseError("Missing command", tag)
    r = Reader(data, m.end() + 1, tag)
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
