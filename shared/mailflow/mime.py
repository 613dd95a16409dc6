"""Parse a stored message once, at delivery, into what IMAP needs: envelope, body structure, part offsets.

`parse(raw)` walks the raw bytes (never decoding the whole message) and returns a `ParsedMessage`: the
RFC 3501 ENVELOPE, the BODYSTRUCTURE tree with the byte offsets of every MIME part, and the top-level
header fields decoded for SEARCH. The mailbox store keeps `to_json(parsed)` beside the message and cuts
BODY[section] with its offsets (mailflow_mailbox_store.sections); imap-pop3 reads the same JSON from the
store for ENVELOPE and BODYSTRUCTURE.

Conventions. Types, subtypes, parameter names, encodings and disposition types are upper case ("TEXT",
"PLAIN", "CHARSET", "BASE64", "ATTACHMENT"); parameter values keep their case. A text/* part without a
charset gets ("CHARSET", "us-ascii") (RFC 2045 §5.2). RFC 2231 continuations are joined; when any piece
was extended the parameter is named "NAME*" and its value stays "charset'lang'%XX..", as Dovecot sends
it. Envelope and parameter strings are the raw values (unfolded, RFC 2047 left alone). Header bytes are
read as UTF-8, or as Latin-1 when they are not valid UTF-8. An address without a domain has host ""
(None is reserved for group markers). `lines` counts the lines of the body; the CRLF before a boundary
belongs to the boundary (RFC 2046 §5.1.1) and is in no part.

Bad input never raises; the walk makes the best structure it can:
- the header ends at the first empty line, or at the first line that is neither a field nor a
  continuation (that line starts the body), or at a boundary line of an enclosing multipart;
- no or unparsable Content-Type: TEXT/PLAIN us-ascii (MESSAGE/RFC822 inside multipart/digest);
  no Content-Transfer-Encoding: 7BIT;
- a boundary line matches by prefix (RFC 2046 §5.1.1), the longest enclosing boundary wins; a part
  ends at the next boundary line of any enclosing multipart, so a missing close delimiter ends the
  multipart where its parent goes on, or at the end of the message;
- a multipart with no parts (no boundary parameter, boundary never seen) gets one implicit TEXT/PLAIN
  part without a header that covers its preamble, so BODYSTRUCTURE stays valid and BODY[1] shows text;
- a message/rfc822 part that is base64 or quoted-printable encoded stays opaque (envelope None, no parts);
- past MAX_DEPTH nesting a multipart keeps its body as one implicit part, past MAX_PARTS parts the
  rest of each multipart is left in its epilogue;
- a header block longer than MAX_HEADER_BYTES ends there (the rest is body); past MAX_FIELDS fields
  (all headers together) a header's further fields are not read, past MAX_PARAMS parameters neither
  are further parameters; past MAX_ADDRESS_TOKENS an address list keeps the addresses read whole so
  far, and past MAX_WORDS encoded words the rest of the header values stay encoded.
A bug in the walk itself is logged and gives a one-part TEXT/PLAIN structure: delivery never fails here.

The standard library's `email` quotes local parts and splits RFC 2231 values here. Why not for words,
addresses and parameters too (Python 3.11, CPU per KiB of one hostile header value; ours stays linear,
<= 0.1 ms/KiB): `email.header.decode_header` is superlinear (unclosed "=?a?q?" words 0.21 -> 1.10
ms/KiB from 16 to 256 KiB) and fails a whole value on one bad word or charset; `email.utils.getaddresses`
flattens groups and splits source routes (no RFC 3501 group markers, adl); `headerregistry` is
superlinear on addresses ('"a' repeated: 31 -> 100 ms/KiB from 4 to 16 KiB) and on parameters (7.5 ->
15 ms/KiB); `Message.get_params` is quadratic on a quote before many ';' (2.7 -> 37 ms/KiB from 4 to 64
KiB). Both parameter readers decode RFC 2231 values, which BODYSTRUCTURE keeps raw.
"""

from __future__ import annotations

import binascii
import codecs
import email.utils
import logging
import operator
import os.path
import re
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache

import orjson

log = logging.getLogger(__name__)

# The work budget of one message (issue 12.2): every step whose count the sender chooses is capped per
# message, and every pattern is linear, so a parse costs at most a few ms per 64 KiB whatever the input
# (tests/unit/test_mime_budget.py). Past a cap the structure degrades as said above; the message is
# never refused and every byte of it stays fetchable.
MAX_PARTS = 1000  # body parts; the rest stays in epilogues (Dovecot: 10000, in C; ~12 us each here)
MAX_DEPTH = 50  # nesting of multipart and message/rfc822 (Dovecot: 100)
MAX_HEADER_BYTES = 256 * 1024  # of one header block; the rest counts as body (Postfix keeps 100 KiB)
MAX_FIELDS = 3000  # header fields looked at, all headers together; later ones are not read
MAX_PARAMS = 1000  # Content-Type/-Disposition parameters (RFC 2231 sections count one each)
MAX_ADDRESS_TOKENS = 2000  # address tokens (atoms, specials, quoted strings, comments) for envelopes
MAX_WORDS = 500  # RFC 2047 encoded words decoded for SEARCH; later ones stay encoded
MAX_HEADERS = 1000  # top-level fields kept in ParsedMessage.headers for SEARCH
MAX_HEADER_CHARS = 64 * 1024  # of each such value

JSON_VERSION = 1


@dataclass(frozen=True, slots=True)
class Address:
    """RFC 3501 address: group start is (None, None, "name", None), group end is all None."""

    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None


@dataclass(frozen=True, slots=True)
class Envelope:
    date: str | None
    subject: str | None
    from_: tuple[Address, ...]
    sender: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    in_reply_to: str | None
    message_id: str | None


@dataclass(frozen=True, slots=True)
class BodyPart:
    type: str  # "TEXT", "MULTIPART", ... (upper case, as are subtype, parameter names and encoding)
    subtype: str
    params: tuple[tuple[str, str], ...]  # (("CHARSET", "utf-8"),); RFC 2231 pieces joined
    id: str | None
    description: str | None
    encoding: str  # Content-Transfer-Encoding, "7BIT" when absent
    size: int  # body octets: end - body_start
    lines: int | None  # text/* and parsed message/rfc822 only
    md5: str | None
    disposition: tuple[str, tuple[tuple[str, str], ...]] | None  # ("ATTACHMENT", (("FILENAME", "a.pdf"),))
    language: tuple[str, ...] | None
    location: str | None
    envelope: Envelope | None  # parsed message/rfc822 and message/global only
    parts: tuple[BodyPart, ...]  # a multipart's children; a message/rfc822's one encapsulated body
    start: int  # offset of the part's MIME header (0 at the top level)
    body_start: int  # offset of its body, after the blank line that ends the header
    end: int  # one past its last byte; the CRLF before the next boundary is not in it


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    envelope: Envelope
    body: BodyPart
    headers: tuple[tuple[str, str], ...]


class _Budget:
    """What is left of one message's work budget (the MAX_* counts above); counts only go down."""

    __slots__ = ("parts", "fields", "params", "tokens", "words")

    def __init__(self) -> None:
        self.parts, self.fields, self.params = MAX_PARTS, MAX_FIELDS, MAX_PARAMS
        self.tokens, self.words = MAX_ADDRESS_TOKENS, MAX_WORDS


# ---------------------------------------------------------------------------------------------------
# Header fields

# One field: name (no whitespace, no colon), optional WSP, colon, value with its continuation lines.
# Possessive (*+, ++): each piece stops where the next must begin, so giving back never helps, and a
# match costs one pass (8x faster than the backtracking form on a long header).
FIELD = re.compile(rb"([^\s:]++)[ \t]*+:([^\n]*+(?:\n[ \t][^\n]*+)*+)")  # also the store's HEADER.FIELDS
_HEADER_BLOCK = re.compile(rb"(?:[^\s:]++[ \t]*+:[^\n]*+(?:\n[ \t][^\n]*+)*+(?:\n|\Z))*+")

_ENVELOPE_FIELDS = {
    "date": 0, "subject": 1, "from": 2, "sender": 3, "reply-to": 4,
    "to": 5, "cc": 6, "bcc": 7, "in-reply-to": 8, "message-id": 9,
}  # fmt: skip


def _text(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def _value(v: bytes) -> bytes:
    """Unfold (RFC 5322 §2.2.3: drop the line breaks, keep the WSP) and trim a field value."""
    if b"\n" in v:
        v = v.replace(b"\r\n", b"").replace(b"\n", b"")
    return v.strip()


# ---------------------------------------------------------------------------------------------------
# RFC 2047 encoded words (for `headers`, which SEARCH reads)

_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?]*)\?=")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CHARSET_ALIASES = {"gb2312": "gb18030", "iso-8859-8-i": "iso8859_8", "utf8": "utf-8"}


@lru_cache(maxsize=256)
def _codec(charset: str) -> str | None:
    charset = charset.lower()
    try:
        info = codecs.lookup(_CHARSET_ALIASES.get(charset, charset))
    except (LookupError, ValueError):
        return None
    return info.name if info._is_text_encoding else None


def _word_bytes(kind: str, text: str) -> bytes | None:
    try:
        if kind in "Bb":
            text = text.strip()
            return binascii.a2b_base64(text + "=" * (-len(text) % 4))
        return binascii.a2b_qp(text.encode("ascii"), header=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


def _decode_run(data: bytes, codec: str) -> str:
    try:
        text = data.decode(codec, "replace")
    except Exception:  # a codec may still fail on odd input; Latin-1 never does
        return data.decode("latin-1")
    if _SURROGATE.search(text):  # Python's *_escape codecs make lone surrogates, which JSON refuses
        text = _SURROGATE.sub("\ufffd", text)
    return text


def decode_words(s: str, budget: _Budget | None = None) -> str:
    """Decode RFC 2047 encoded words. Adjacent words lose the whitespace between them and are joined
    before decoding (so a character split across words survives); a word with an unknown charset or
    bad encoding is left as it is. Words inside other text are decoded too, as mail clients do.
    Past the budget's words the rest of `s` stays as it is."""
    if "=?" not in s:
        return s
    budget = budget or _Budget()
    out: list[str] = []
    run: list[bytes] = []  # adjacent words in one charset, decoded together
    run_codec = None
    last = 0
    for m in _WORD.finditer(s):
        if budget.words <= 0:
            break
        budget.words -= 1
        codec = _codec(m.group(1).split("*", 1)[0])
        data = _word_bytes(m.group(2), m.group(3)) if codec else None
        gap = s[last : m.start()]
        adjacent = run_codec is not None and (not gap or gap.isspace())  # the space between goes
        if data is not None and adjacent and codec == run_codec:
            run.append(data)
        else:
            if run_codec:
                out.append(_decode_run(b"".join(run), run_codec))
            if data is None:
                out.append(gap + m.group(0))
                run, run_codec = [], None
            else:
                if not adjacent:
                    out.append(gap)
                run, run_codec = [data], codec
        last = m.end()
    if run_codec:
        out.append(_decode_run(b"".join(run), run_codec))
    out.append(s[last:])
    return "".join(out)


# ---------------------------------------------------------------------------------------------------
# Addresses (RFC 5322 §3.4 address-list, obsolete forms tolerated) into RFC 3501 address structures

_ATOKEN = re.compile(
    r'(\s+)|"([^"\\]*+(?:\\.[^"\\]*+)*+)"?|(\()|\[([^\]\\]*+(?:\\.[^\]\\]*+)*+)\]?|([<>@,;:.])'
    r'|([^\s"(<>@,;:.\[]+)',
    re.S,
)
_COMMENT_STOP = re.compile(r"\\.|[()]", re.S)
_ESCAPE = re.compile(r"\\(.)", re.S)
_KEEP = operator.itemgetter(1)  # 5x faster than the template r"\1"


def unescape(quoted: str) -> str:
    """The text of a quoted-string's inside: each backslash pair stands for its second character."""
    return _ESCAPE.sub(_KEEP, quoted)


_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_GROUP_END = Address(None, None, None, None)

# A token is (kind, text, space_before); kind: a atom, q quoted, d domain literal, s special, c comment.
_Token = tuple[str, str, bool]


def _tokens(s: str, budget: _Budget) -> tuple[list[_Token], bool]:
    """The tokens of `s`, and whether that is all of them (False: the budget ran out first). Each token
    and each parenthesis or escape inside a comment costs one of the budget's tokens."""
    toks: list[_Token] = []
    pos, n, space = 0, len(s), False
    while pos < n:
        if budget.tokens <= 0:
            return toks, False
        budget.tokens -= 1
        m = _ATOKEN.match(s, pos)
        if m is None:  # cannot happen: the alternatives cover every character
            break
        pos = m.end()
        kind = m.lastindex
        if kind == 1:
            space = True
            continue
        if kind == 3:
            depth = 1
            for c in _COMMENT_STOP.finditer(s, pos):
                budget.tokens -= 1
                if budget.tokens < 0:
                    return toks, False
                if c.group() == "(":
                    depth += 1
                elif c.group() == ")":
                    depth -= 1
                    if depth == 0:
                        toks.append(("c", s[pos : c.start()], True))
                        pos = c.end()
                        break
            else:
                toks.append(("c", s[pos:], True))
                pos = n
            space = True
            continue
        if kind == 2:
            toks.append(("q", unescape(m.group(2)), space))
        elif kind == 4:
            toks.append(("d", "[" + m.group(4) + "]", space))
        elif kind == 5:
            toks.append(("s", m.group(5), space))
        else:
            toks.append(("a", m.group(6), space))
        space = False
    return toks, True


def _phrase(toks: list[_Token]) -> str | None:
    out: list[str] = []
    for kind, text, space in toks:
        if kind == "c":
            continue
        if out and space:
            out.append(" ")
        out.append(text)
    return "".join(out).strip() or None


def _local_part(toks: list[_Token]) -> str:
    out: list[str] = []
    quoted = False
    for kind, text, space in toks:
        if out and space and text != "." and out[-1] != ".":
            out.append(" ")
        quoted = quoted or kind == "q"
        out.append(text)
    local = "".join(out)
    if quoted and not _DOT_ATOM.fullmatch(local):
        return '"' + email.utils.quote(local) + '"'
    return local


def _addr_spec(toks: list[_Token]) -> tuple[str, str]:
    at = [i for i, t in enumerate(toks) if t[:2] == ("s", "@")]
    if not at:
        return _local_part(toks), ""
    i = at[-1]
    return _local_part(toks[:i]), "".join(t[1] for t in toks[i + 1 :])


def _mailbox(toks: list[_Token]) -> Address | None:
    words = [t for t in toks if t[0] != "c"]
    if not words:
        return None
    comments = [t[1].strip() for t in toks if t[0] == "c" and t[1].strip()]
    lt = next((i for i, t in enumerate(toks) if t[:2] == ("s", "<")), None)
    if lt is None:  # bare addr-spec; a comment is the only name it has: "root (Cron Daemon)"
        mailbox, host = _addr_spec(words)
        name = unescape(comments[-1]) if comments else None
        return Address(name, None, mailbox, host)
    gt = next((i for i in range(lt + 1, len(toks)) if toks[i][:2] == ("s", ">")), len(toks))
    inner = [t for t in toks[lt + 1 : gt] if t[0] != "c"]
    adl = None
    if inner and inner[0][:2] == ("s", "@"):  # obsolete source route: <@a,@b:user@host>
        colon = next((i for i, t in enumerate(inner) if t[:2] == ("s", ":")), None)
        if colon is not None:
            adl, inner = "".join(t[1] for t in inner[:colon]), inner[colon + 1 :]
    mailbox, host = _addr_spec(inner)
    return Address(_phrase(toks[:lt]), adl, mailbox, host)


# The common case, a list of plain `name <a@b>`, `"name" <a@b>` and `a@b`, skips the tokenizer.
_W = r'[^\s"(),:;<>@\[\]\\]++'  # possessive here and below: what follows a word can never be in one
_SIMPLE = re.compile(
    rf'\s*(?:(?:"([^"\\]*+(?:\\.[^"\\]*+)*+)"|({_W}(?:\s+{_W})*+))?\s*<({_W})@({_W})>|({_W})@({_W}))\s*(?:,|\Z)', re.S
)


def _simple_addresses(value: str, budget: _Budget) -> tuple[Address, ...] | None:
    """None if `value` is not such a list. Each address costs one of the budget's tokens; past them the
    addresses so far are all there is."""
    out: list[Address] = []
    pos, n, match = 0, len(value), _SIMPLE.match
    while pos < n:
        if budget.tokens <= 0:
            break
        budget.tokens -= 1
        m = match(value, pos)
        if m is None:
            return None
        quoted, phrase, mailbox, host, bare, bare_host = m.groups()
        if bare is not None:
            out.append(Address(None, None, bare, bare_host))
        else:
            if quoted is not None:
                name = unescape(quoted).strip() or None
            else:
                name = " ".join(phrase.split()) if phrase else None
            out.append(Address(name, None, mailbox, host))
        pos = m.end()
    return tuple(out)


def parse_addresses(value: str, budget: _Budget | None = None) -> tuple[Address, ...]:
    """An address-list header value as RFC 3501 addresses; names stay raw (RFC 2047 not decoded).
    Past the budget's tokens the addresses parsed so far are all there is."""
    budget = budget or _Budget()
    if (simple := _simple_addresses(value, budget)) is not None:
        return simple
    return _parse_addresses(value, budget)


def _parse_addresses(value: str, budget: _Budget) -> tuple[Address, ...]:
    out: list[Address] = []
    cur: list[_Token] = []
    angle = group = at = False  # at: cur has an "@" (then a ":" is a source route's, not a group's)
    toks, complete = _tokens(value, budget)
    for tok in toks:
        if tok[0] == "s":
            c = tok[1]
            if c == "<":
                angle = True
            elif c == ">":
                angle = False
            elif c == "@":
                at = True
            elif not angle and c in ",;":
                if (a := _mailbox(cur)) is not None:
                    out.append(a)
                cur, at = [], False
                if c == ";" and group:
                    out.append(_GROUP_END)
                    group = False
                continue
            elif not angle and c == ":" and not group and not at:
                out.append(Address(None, None, _phrase(cur) or "", None))
                cur, group = [], True
                continue
        cur.append(tok)
    if complete and (a := _mailbox(cur)) is not None:  # a cut-off address is no address
        out.append(a)
    if group:
        out.append(_GROUP_END)
    return tuple(out)


def _field_texts(fields: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """(name, unfolded value) as str; what _value and _text do, inlined: this runs for every field."""
    out = []
    for name, value in fields:
        if b"\n" in value:
            value = value.replace(b"\r\n", b"").replace(b"\n", b"")
        value = value.strip()
        out.append((
            name.decode("ascii") if name.isascii() else _text(name),
            value.decode("ascii") if value.isascii() else _text(value),
        ))  # fmt: skip
    return out


def _envelope(texts: list[tuple[str, str]], budget: _Budget) -> Envelope:
    vals: list[str | None] = [None] * 10
    get = _ENVELOPE_FIELDS.get
    for name, value in texts:
        i = get(name)
        if i is not None and vals[i] is None:
            vals[i] = value
    from_, sender, reply_to, to, cc, bcc = (parse_addresses(v, budget) if v else () for v in vals[2:8])
    return Envelope(
        vals[0], vals[1], from_, sender or from_, reply_to or from_, to, cc, bcc, vals[8], vals[9]
    )


# ---------------------------------------------------------------------------------------------------
# Content-Type / Content-Disposition parameters (RFC 2045 §5.1, RFC 2231)

_TYPE = re.compile(r'\s*([^\s/;()<>@,:\\"\[\]?=]+)\s*/\s*([^\s/;()<>@,:\\"\[\]?=]+)')
_TOKEN = re.compile(r'\s*([^\s/;()<>@,:\\"\[\]?=]+)')
_PARAM = re.compile(r'\s*;\s*([^\s=;"]+)\s*=\s*(?:"([^"\\]*+(?:\\.[^"\\]*+)*+)"?|([^;]*))', re.S)
_PARAM_NAME = re.compile(r"([^*]+)(?:\*(\d{1,3}))?(\*)?")


def _pct(s: str) -> str:
    """A plain (Latin-1 str) RFC 2231 section as extended-value text: all but attribute-chars escaped."""
    return urllib.parse.quote(s, safe="!#$&+^`|", encoding="latin-1")


def _without_trailing_comment(value: str) -> str:
    """A token value stripped, and without one trailing "(comment)" (RFC 2045 §5.1 allows comments)."""
    value = value.strip()
    if value.endswith(")"):
        i = value.rfind("(")
        if i >= 0 and ")" not in value[i:-1]:
            value = value[:i].rstrip()
    return value


def _params(s: str, pos: int, budget: _Budget) -> list[tuple[str, str]]:
    """Parameters from `pos` on, as (UPPER NAME, Latin-1 value), RFC 2231 sections joined. Each one (and
    each piece of junk skipped) costs one of the budget's params; past them the rest is not read."""
    plain: dict[str, str] = {}
    sections: dict[str, list[tuple[int, bool, str]]] = {}
    order: list[str] = []
    n = len(s)
    while pos < n and budget.params > 0:
        budget.params -= 1
        m = _PARAM.match(s, pos)
        if m is None:  # junk: skip to the next ';'
            j = s.find(";", pos + 1)
            if j < 0:
                break
            pos = j
            continue
        pos = m.end()
        value = unescape(m.group(2)) if m.group(2) is not None else m.group(3)
        if m.group(3) is not None:
            value = _without_trailing_comment(value)
        parts = _PARAM_NAME.fullmatch(m.group(1))
        if parts is None or (parts.group(2) is None and parts.group(3) is None):
            key = m.group(1).upper()
            if key not in plain:
                plain[key] = value
                order.append(key)
            continue
        base = parts.group(1).upper()
        if base + "*" not in sections:
            sections[base + "*"] = []
            order.append(base + "*")
        sections[base + "*"].append((int(parts.group(2) or 0), parts.group(3) is not None, value))
    out: list[tuple[str, str]] = []
    for key in order:
        if key in plain:
            out.append((key, plain[key]))
            continue
        pieces = sorted({num: (num, ext, v) for num, ext, v in reversed(sections[key])}.values())
        if not any(ext for _, ext, _ in pieces):
            name = key[:-1]
            if name not in plain:
                out.append((name, "".join(v for _, _, v in pieces)))
            continue
        value = "".join(v if ext else _pct(v) for _, ext, v in pieces)
        if not pieces[0][1] or pieces[0][2].count("'") < 2:
            value = "''" + value
        out.append((key, value))
    return out


def _fix(params: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v if v.isascii() else _text(v.encode("latin-1"))) for k, v in params)


def _boundary(params: list[tuple[str, str]]) -> bytes | None:
    for key, value in params:
        if key == "BOUNDARY":
            return value.encode("latin-1") or None
    for key, value in params:
        if key == "BOUNDARY*":  # absurd but legal: charset'lang'%XX
            _, _, text = email.utils.decode_rfc2231(value)
            return urllib.parse.unquote_to_bytes(text.encode("latin-1")) or None
    return None


def _disposition(v: bytes, budget: _Budget) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    s = v.decode("latin-1")
    m = _TOKEN.match(s)
    if m is None:
        return None
    return m.group(1).upper(), _fix(_params(s, m.end(), budget))


# ---------------------------------------------------------------------------------------------------
# The walk

_TEXT_PLAIN = ("TEXT", "PLAIN", (("CHARSET", "us-ascii"),))
_MESSAGE_RFC822 = ("MESSAGE", "RFC822", ())
_IDENTITY = frozenset({"7BIT", "8BIT", "BINARY"})

# A boundary line found by _scan: (line start, line end after its LF, boundary index, is close delimiter)
_Hit = tuple[int, int, int, bool]


def _lines(raw: bytes, start: int, end: int) -> int:
    if start >= end:
        return 0
    return raw.count(b"\n", start, end) + (raw[end - 1] != 10)


class _Walker:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.budget = _Budget()
        self.leads: dict[tuple[bytes, ...], bytes] = {}

    def boundary_at(self, q: int, bounds: tuple[bytes, ...]) -> _Hit | None:
        """The boundary line starting at q, if any: the longest matching boundary, innermost on ties."""
        raw, best, size = self.raw, -1, -1
        if not raw.startswith(bounds, q):  # one call in C rejects most candidate lines
            return None
        for i, dashed in enumerate(bounds):
            if len(dashed) >= size and raw.startswith(dashed, q):
                best, size = i, len(dashed)
        if best < 0:
            return None
        eol = raw.find(b"\n", q)
        return q, (len(raw) if eol < 0 else eol + 1), best, raw.startswith(b"--", q + size)

    def lead(self, bounds: tuple[bytes, ...]) -> bytes:
        """LF and what all the boundaries share: only lines that start so can be boundary lines, so that
        lines of dashes in a body cost a find, not a Python loop each."""
        lead = self.leads.get(bounds)
        if lead is None:
            lead = self.leads[bounds] = b"\n" + os.path.commonprefix(bounds)
        return lead

    def scan(self, pos: int, bounds: tuple[bytes, ...]) -> _Hit | None:
        """The first boundary line at or after `pos` (a line start)."""
        if not bounds:
            return None
        raw, lead = self.raw, self.lead(bounds)
        if raw.startswith(lead[1:], pos) and (hit := self.boundary_at(pos, bounds)):
            return hit
        q = raw.find(lead, pos)
        while q >= 0:
            if hit := self.boundary_at(q + 1, bounds):
                return hit
            q = raw.find(lead, q + 1)
        return None

    def skip(self, pos: int, bounds: tuple[bytes, ...]) -> _Hit | None:
        """Over MAX_PARTS: the next boundary line that is not a delimiter of the innermost multipart.
        Only the close delimiter of the innermost is looked for, so its other delimiters cost nothing."""
        own = len(bounds) - 1
        wanted = bounds[:-1] + (bounds[-1] + b"--",)
        while (found := self.scan(pos, wanted)) is not None:
            hit = self.boundary_at(found[0], bounds)  # what the line really is: the longest boundary
            if hit is not None and (hit[2] != own or hit[3]):
                return hit
            pos = found[1]
        return None

    def end_before(self, hit: _Hit | None, floor: int) -> int:
        """Where content ends before `hit`: the CRLF (or LF) that precedes a boundary belongs to it."""
        if hit is None:
            return len(self.raw)
        q = hit[0]
        if q > floor and self.raw[q - 1] == 10:
            q -= 1
            if q > floor and self.raw[q - 1] == 13:
                q -= 1
        return q

    def header(self, start: int, bounds: tuple[bytes, ...]) -> tuple[list[tuple[bytes, bytes]], int]:
        """Fields (lower-case name, raw value) and the body offset. The header ends at the first line
        that is neither a field nor a continuation, at a boundary line (which may look like a field:
        boundaries may contain ':'), or after MAX_HEADER_BYTES (the rest counts as body). The block is
        matched in pieces cut at the lines that may be boundaries, so no byte is looked at twice."""
        raw = self.raw
        limit = min(len(raw), start + MAX_HEADER_BYTES)
        pos = start
        if not bounds:
            pos = _HEADER_BLOCK.match(raw, start, limit).end()
        elif not (raw.startswith(self.lead(bounds)[1:], start) and self.boundary_at(start, bounds)):
            lead = self.lead(bounds)
            while True:
                q = raw.find(lead, pos, limit)
                piece = limit if q < 0 else q + 1
                pos = _HEADER_BLOCK.match(raw, pos, piece).end()
                if pos < piece or q < 0 or self.boundary_at(piece, bounds):
                    break
        found = FIELD.findall(raw, start, pos)  # C speed, and at most MAX_HEADER_BYTES of them
        if len(found) > self.budget.fields:
            found = found[: max(self.budget.fields, 0)]
        self.budget.fields -= len(found)
        fields = [(name.lower(), value) for name, value in found]
        if raw.startswith(b"\r\n", pos):
            return fields, pos + 2
        if raw.startswith(b"\n", pos):
            return fields, pos + 1
        return fields, pos

    def implicit(self, start: int, end: int) -> BodyPart:
        t, st, params = _TEXT_PLAIN
        lines = _lines(self.raw, start, end)
        return BodyPart(
            t, st, params, None, None, "7BIT", end - start, lines, None, None, None, None, None, (),
            start, start, end,
        )  # fmt: skip

    def entity(
        self, start: int, bounds: tuple[bytes, ...], depth: int, digest: bool = False, message: bool = False
    ) -> tuple[BodyPart, _Hit | None, list[tuple[str, str]], Envelope | None]:
        """One entity (a message or a MIME part) from `start`; also the boundary line that ended it, and
        for a `message` its fields as text and its envelope (made before its body is walked, so that
        the budget goes to what comes first)."""
        self.budget.parts -= 1
        raw = self.raw
        fields, body_start = self.header(start, bounds)
        texts: list[tuple[str, str]] = []
        own_envelope = None
        if message:
            texts = _field_texts(fields)
            own_envelope = _envelope(texts, self.budget)
        ctype = cte = cid = desc = md5 = disp = lang = loc = None
        for name, value in fields:
            if not name.startswith(b"content-"):
                continue
            key = name[8:]
            if key == b"type" and ctype is None:
                ctype = _value(value)
            elif key == b"transfer-encoding" and cte is None:
                cte = _value(value)
            elif key == b"id" and cid is None:
                cid = _text(_value(value))
            elif key == b"description" and desc is None:
                desc = _text(_value(value))
            elif key == b"md5" and md5 is None:
                md5 = _text(_value(value))
            elif key == b"disposition" and disp is None:
                disp = _disposition(_value(value), self.budget)
            elif key == b"language" and lang is None:
                lang = tuple(x.strip() for x in _text(_value(value)).split(",") if x.strip()) or None
            elif key == b"location" and loc is None:
                loc = _text(_value(value))

        mtype, subtype, plist, boundary = *(_MESSAGE_RFC822 if digest else _TEXT_PLAIN), None
        if ctype is not None:
            s = ctype.decode("latin-1")
            m = _TYPE.match(s)
            if m is None:
                mtype, subtype, plist = _TEXT_PLAIN
            else:
                mtype, subtype = m.group(1).upper(), m.group(2).upper()
                raw_params = _params(s, m.end(), self.budget)
                boundary = _boundary(raw_params)
                plist = _fix(raw_params)
                if mtype == "TEXT" and not any(k == "CHARSET" for k, _ in plist):
                    plist += (("CHARSET", "us-ascii"),)
        m = _TOKEN.match(cte.decode("latin-1")) if cte else None
        encoding = m.group(1).upper() if m else "7BIT"

        envelope, parts, lines = None, (), None
        if mtype == "MULTIPART":
            if boundary is not None and depth < MAX_DEPTH:
                parts, end, hit = self.multipart(body_start, bounds + (b"--" + boundary,), depth, subtype)
            else:
                hit = self.scan(body_start, bounds)
                end = self.end_before(hit, body_start)
                parts = (self.implicit(body_start, end),)
        elif (
            mtype == "MESSAGE"
            and subtype in ("RFC822", "GLOBAL")
            and encoding in _IDENTITY
            and depth < MAX_DEPTH
            and self.budget.parts > 0
        ):
            inner, hit, _, envelope = self.entity(body_start, bounds, depth + 1, message=True)
            parts, end = (inner,), inner.end
            lines = _lines(raw, body_start, end)
        else:
            hit = self.scan(body_start, bounds)
            end = self.end_before(hit, body_start)
            if mtype == "TEXT":
                lines = _lines(raw, body_start, end)
        part = BodyPart(
            mtype, subtype, plist, cid, desc, encoding, end - body_start, lines, md5, disp, lang, loc,
            envelope, parts, start, body_start, end,
        )  # fmt: skip
        return part, hit, texts, own_envelope

    def multipart(
        self, body_start: int, bounds: tuple[bytes, ...], depth: int, subtype: str
    ) -> tuple[tuple[BodyPart, ...], int, _Hit | None]:
        own = len(bounds) - 1
        hit = self.scan(body_start, bounds)
        preamble_end = self.end_before(hit, body_start)
        children: list[BodyPart] = []
        while hit is not None and hit[2] == own and not hit[3]:
            if self.budget.parts <= 0:
                hit = self.skip(hit[1], bounds)
                break
            child, hit, _, _ = self.entity(hit[1], bounds, depth + 1, digest=subtype == "DIGEST")
            children.append(child)
        if not children:
            children.append(self.implicit(body_start, preamble_end))
        if hit is not None and hit[2] == own:  # close delimiter: the epilogue runs to the parent's next
            hit = self.scan(hit[1], bounds[:-1])
        # Not before the last part's end: an empty part after a last delimiter line starts right at the
        # parent's boundary line, so the CRLF before that line ends the delimiter line and stays inside.
        return tuple(children), self.end_before(hit, children[-1].end), hit


def _fallback(raw: bytes) -> ParsedMessage:
    empty = Envelope(None, None, (), (), (), (), (), (), None, None)
    t, st, params = _TEXT_PLAIN
    body = BodyPart(t, st, params, None, None, "7BIT", len(raw), _lines(raw, 0, len(raw)), None, None, None,
                    None, None, (), 0, 0, len(raw))  # fmt: skip
    return ParsedMessage(empty, body, ())


def parse(raw: bytes) -> ParsedMessage:
    """Parse a whole message. Never raises (see the module docstring for what bad input becomes)."""
    if not isinstance(raw, bytes):
        raw = bytes(raw)  # bytearray, memoryview
    try:
        return _parse(raw)
    except Exception:
        log.exception("mime parse failed, stored as one text part", extra={"size": len(raw)})
        return _fallback(raw)


def _parse(raw: bytes) -> ParsedMessage:
    walker = _Walker(raw)
    body, _, texts, envelope = walker.entity(0, (), 0, message=True)
    budget = walker.budget
    headers = tuple([
        (name, (decode_words(value, budget) if "=?" in value else value)[:MAX_HEADER_CHARS])
        for name, value in texts[:MAX_HEADERS]
    ])  # fmt: skip
    return ParsedMessage(envelope, body, headers)


# ---------------------------------------------------------------------------------------------------
# JSON, as the store keeps it: positional arrays, trailing defaults left out

# start, body_start, end, type, subtype, params, id, description, encoding, lines, md5, disposition,
# language, location, envelope, parts, size (only when it is not end - body_start)
_PART_DEFAULTS = (None, None, None, None, None, [], None, None, "7BIT", None, None, None, None, None, None, [],
                  None)  # fmt: skip


def _addr_out(addrs: tuple[Address, ...]) -> list:
    return [[a.name, a.adl, a.mailbox, a.host] for a in addrs]


def _addr_in(items: list) -> tuple[Address, ...]:
    return tuple(Address(*a) for a in items)


def _env_out(e: Envelope, refs: dict[str, int]) -> list:
    f = _addr_out(e.from_)
    return [
        refs.get(e.date, e.date) if e.date is not None else None,
        refs.get(e.subject, e.subject) if e.subject is not None else None,
        f,
        0 if e.sender == e.from_ else _addr_out(e.sender),
        0 if e.reply_to == e.from_ else _addr_out(e.reply_to),
        _addr_out(e.to), _addr_out(e.cc), _addr_out(e.bcc),
        refs.get(e.in_reply_to, e.in_reply_to) if e.in_reply_to is not None else None,
        refs.get(e.message_id, e.message_id) if e.message_id is not None else None,
    ]  # fmt: skip


def _env_in(j: list, headers: tuple[tuple[str, str], ...]) -> Envelope:
    def s(v):
        return headers[v][1] if isinstance(v, int) else v

    f = _addr_in(j[2])
    return Envelope(
        s(j[0]), s(j[1]), f, f if j[3] == 0 else _addr_in(j[3]), f if j[4] == 0 else _addr_in(j[4]),
        _addr_in(j[5]), _addr_in(j[6]), _addr_in(j[7]), s(j[8]), s(j[9]),
    )  # fmt: skip


def _flat(pairs) -> list[str]:
    return [x for pair in pairs for x in pair]


def _pairs(flat: list[str]) -> tuple[tuple[str, str], ...]:
    return tuple(zip(flat[::2], flat[1::2], strict=True))


def _part_out(b: BodyPart) -> list:
    d = b.disposition
    j = [
        b.start, b.body_start, b.end, b.type, b.subtype, _flat(b.params), b.id, b.description, b.encoding,
        b.lines, b.md5, None if d is None else [d[0], _flat(d[1])],
        None if b.language is None else list(b.language), b.location,
        None if b.envelope is None else _env_out(b.envelope, {}), [_part_out(c) for c in b.parts],
        None if b.size == b.end - b.body_start else b.size,
    ]  # fmt: skip
    while len(j) > 5 and j[-1] == _PART_DEFAULTS[len(j) - 1]:
        j.pop()
    return j


def _part_in(j: list) -> BodyPart:
    j = j + list(_PART_DEFAULTS[len(j) :])
    d = j[11]
    return BodyPart(
        j[3], j[4], _pairs(j[5]), j[6], j[7], j[8], j[2] - j[1] if j[16] is None else j[16], j[9], j[10],
        None if d is None else (d[0], _pairs(d[1])), None if j[12] is None else tuple(j[12]), j[13],
        None if j[14] is None else _env_in(j[14], ()), tuple(_part_in(c) for c in j[15]), j[0], j[1], j[2],
    )  # fmt: skip


def part_at(body: BodyPart, nums: list[int] | tuple[int, ...]) -> BodyPart | None:
    """The part a section's part numbers name (RFC 3501 §6.4.5), or None: a multipart's children count
    from 1, a non-multipart message has one part (its body), and a message/rfc822 part's numbers go on
    into the message it carries."""
    node: BodyPart | None = body
    for i, n in enumerate(nums):
        node = _child(node, n, i == 0)
        if node is None:
            return None
    return node


def _child(node: BodyPart, n: int, message_body: bool) -> BodyPart | None:
    if node.type == "MULTIPART":
        return node.parts[n - 1] if n <= len(node.parts) else None
    if message_body:  # a non-multipart message has exactly one part: its body
        return node if n == 1 else None
    if node.envelope is not None and node.parts:
        return _child(node.parts[0], n, True)
    return None


IDENTITY_ENCODINGS = frozenset({"7BIT", "8BIT", "BINARY"})


def decode_transfer(data: bytes, encoding: str, strict: bool = False) -> bytes:
    """A part's body without its Content-Transfer-Encoding (RFC 2045 §6). Base64 skips what is not of its
    alphabet, as RFC 2045 §6.8 asks of a reader. An encoding we do not know raises ValueError; with
    `strict`, so does base64 that does not decode (IMAP BINARY must not hand out a guess)."""
    enc = encoding.upper()
    if enc in IDENTITY_ENCODINGS:
        return data
    if enc == "BASE64":
        try:
            return binascii.a2b_base64(data, strict_mode=False)
        except binascii.Error:
            if strict:
                raise ValueError("base64 that does not decode") from None
            return data
    if enc == "QUOTED-PRINTABLE":
        return binascii.a2b_qp(data)
    raise ValueError(f"unknown Content-Transfer-Encoding {encoding[:40]}")


def to_json(p: ParsedMessage) -> bytes:
    """Compact JSON: [version, envelope, body, flat headers]. Envelope strings equal to a header's value
    are stored as that header's index."""
    refs: dict[str, int] = {}
    for i, (name, value) in enumerate(p.headers):
        if name in ("date", "subject", "message-id", "in-reply-to"):
            refs.setdefault(value, i)
    return orjson.dumps([JSON_VERSION, _env_out(p.envelope, refs), _part_out(p.body), _flat(p.headers)])


def from_json(data: bytes) -> ParsedMessage:
    version, env, body, flat = orjson.loads(data)
    if version != JSON_VERSION:
        raise ValueError(f"unknown mime json version {version}")
    headers = _pairs(flat)
    return ParsedMessage(_env_in(env, headers), _part_in(body), headers)
