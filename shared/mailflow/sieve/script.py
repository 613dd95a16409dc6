"""Sieve scripts (RFC 5228) checked and turned into a small tree of our own: `compile(data)` -> `Script`.

sievelib parses (its lexer and grammar, with the checks it makes: unknown commands, arguments, and
extensions used without `require`; grammar.py adds what it lacks); this module then refuses what we do
not run and builds the tree the interpreter (mailflow.sieve.interpret) walks. Pure: no I/O. Every
problem raises `SieveError`, whose text says what and, when the parser knows it, on which line
("line 3: ..."), fit for a ManageSieve client. Refused:
- a script larger than `max_bytes`, not UTF-8, or nested deeper than MAX_NESTING / with more than
  MAX_COMMANDS commands and tests;
- a `require` of an extension not in SUPPORTED ("unsupported extension: notify"), and a redirect to
  something that is not an address;
- `body :content` (only :raw and :text are run), imap4flags' variable-name arguments (a syntax error:
  grammar.py), i;ascii-numeric without its `require`, or with :contains/:matches (RFC 4790 §9.1: it has
  no substring operation), a `set` name that is not an identifier, a relational operator or date part
  or zone that can never be right (when it holds no variable to be expanded at run time), `include
  :global` (there are no global scripts) and `global` (RFC 6609 §3.3: not run).
sievelib keeps the extensions a script loaded in a class attribute, so parsing is serialised here
(`_LOCK`); parsing is synchronous and bounded by `max_bytes`.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from sievelib.parser import Parser

from mailflow.sieve import grammar  # noqa: F401 (registers our commands with sievelib)

# What `require` may name, and what ManageSieve's SIEVE capability lists (RFC 5804 §1.7).
SUPPORTED = (
    "fileinto",  # RFC 5228 §4.1
    "envelope",  # RFC 5228 §5.4
    "imap4flags",  # RFC 5232
    "body",  # RFC 5173 (:raw and :text)
    "copy",  # RFC 3894
    "mailbox",  # RFC 5490 §3: fileinto :create and the mailboxexists test
    "subaddress",  # RFC 5233: :user and :detail address parts ("+" separates them)
    "relational",  # RFC 5231: :count and :value
    "variables",  # RFC 5229: set, string, ${name} and the match variables ${0}..${9}
    "date",  # RFC 5260: date and currentdate
    "include",  # RFC 6609: include (:personal only) and return; no `global`
    "reject",  # RFC 5429: reject (an MDN to the sender)
    "ereject",  # RFC 5429: after acceptance the same as reject
    "vacation",  # RFC 5230
    "comparator-i;octet",  # RFC 4790 §9.3, always available (RFC 5228 §2.7.3)
    "comparator-i;ascii-casemap",  # RFC 4790 §9.2, the default
    "comparator-i;ascii-numeric",  # RFC 4790 §9.1
)
RELATIONS = ("gt", "ge", "lt", "le", "eq", "ne")
DATE_PARTS = ("year", "month", "day", "date", "julian", "hour", "minute", "second", "time", "iso8601", "std11",
              "zone", "weekday")  # fmt: skip
MAX_VACATION_DAYS = 365  # RFC 5230 §4.1 lets a site cap :days
MAX_NESTING = 16  # blocks and tests inside one another
MAX_COMMANDS = 2000  # commands and tests in one script
DEFAULT_MAX_BYTES = 64 * 1024


class SieveError(ValueError):
    """The script cannot be run; str(exc) says why (and where, as "line N: ...")."""


_LOCK = threading.Lock()
# (sievelib's own text: rule backtracked over runs of line breaks, n^2/2 steps for a run of n; its
# replacement in mailflow.sieve.grammar reads line by line: 64 KiB of line breaks in 10 ms.)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_ZONE = re.compile(r"[+-][0-9]{4}")
_MODIFIER_ORDER = ("lower", "upper", "lowerfirst", "upperfirst", "quotewildcard", "length")  # RFC 5229 §4

# --- the tree -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """How a test compares: :is/:contains/:matches under i;ascii-casemap or i;octet."""

    kind: str = "is"  # is | contains | matches | count | value
    comparator: str = "i;ascii-casemap"  # or i;octet, i;ascii-numeric
    relation: str = ""  # with count and value: gt, ge, lt, le, eq, ne


@dataclass(frozen=True)
class Header:
    names: tuple[str, ...]
    keys: tuple[str, ...]
    match: Match


@dataclass(frozen=True)
class Address:
    names: tuple[str, ...]  # header names (address) or "from"/"to" (envelope)
    keys: tuple[str, ...]
    match: Match
    part: str = "all"  # all | localpart | domain | user | detail
    envelope: bool = False


@dataclass(frozen=True)
class Exists:
    names: tuple[str, ...]


@dataclass(frozen=True)
class Size:
    over: bool
    limit: int


@dataclass(frozen=True)
class Body:
    keys: tuple[str, ...]
    match: Match
    transform: str = "text"  # text | raw


@dataclass(frozen=True)
class HasFlag:
    flags: tuple[str, ...]
    match: Match


@dataclass(frozen=True)
class MailboxExists:
    names: tuple[str, ...]


@dataclass(frozen=True)
class String:
    sources: tuple[str, ...]
    keys: tuple[str, ...]
    match: Match


@dataclass(frozen=True)
class Date:
    header: str | None  # None: currentdate
    part: str
    keys: tuple[str, ...]
    match: Match
    zone: str | None = None  # "+hhmm"; None: UTC (our local zone)
    original: bool = False  # :originalzone: the header's own zone


@dataclass(frozen=True)
class AllOf:
    tests: tuple


@dataclass(frozen=True)
class AnyOf:
    tests: tuple


@dataclass(frozen=True)
class Not:
    test: object


@dataclass(frozen=True)
class Const:
    value: bool


@dataclass(frozen=True)
class If:
    branches: tuple  # ((test or None for else, block), ...)


@dataclass(frozen=True)
class Keep:
    flags: tuple[str, ...] | None = None  # None: the current internal flags (RFC 5232 §5)


@dataclass(frozen=True)
class FileInto:
    mailbox: str
    copy: bool = False
    create: bool = False
    flags: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Discard:
    pass


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Flags:
    op: str  # set | add | remove
    flags: tuple[str, ...]


@dataclass(frozen=True)
class Set:
    name: str  # lower case
    value: str
    modifiers: tuple[str, ...] = ()  # in the order they apply (RFC 5229 §4: by precedence)


@dataclass(frozen=True)
class Include:
    name: str
    once: bool = False
    optional: bool = False


@dataclass(frozen=True)
class Return:
    pass


@dataclass(frozen=True)
class Redirect:
    address: str
    copy: bool = False


@dataclass(frozen=True)
class Reject:
    reason: str


@dataclass(frozen=True)
class Vacation:
    reason: str
    days: int = 7  # RFC 5230 §4.1: the default, and at least 1
    subject: str | None = None
    from_: str | None = None
    addresses: tuple[str, ...] = ()
    handle: str | None = None
    mime: bool = False


@dataclass(frozen=True)
class Script:
    commands: tuple
    require: tuple[str, ...] = field(default=())

    @property
    def variables(self) -> bool:
        """Strings hold ${...} references to expand (RFC 5229 §3: only when "variables" is required)."""
        return "variables" in self.require


# --- parsing ----------------------------------------------------------------------------------------


def compile(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Script:  # noqa: A001 (what it does)
    if len(data) > max_bytes:
        raise SieveError(f"script larger than {max_bytes} octets")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SieveError(f"script is not UTF-8 (octet {exc.start})") from None
    with _LOCK:
        parser = Parser()
        try:
            ok = parser.parse(data)
        except Exception as exc:  # sievelib has raised more than its own errors on odd input
            raise SieveError(f"cannot parse: {type(exc).__name__}") from None
        if not ok:
            raise SieveError(str(getattr(parser, "error", "syntax error")))
        tree = parser.result
    b = _Builder()
    return Script(b.block(tree, 0), tuple(b.require))


def string(value) -> str:
    """A sievelib string token ("quoted" or text: multi-line) as its value (RFC 5228 §2.4.2)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    value = str(value)
    if value.startswith("text:"):
        lines = value[5:].split("\n")[1:]  # the rest of the "text:" line is whitespace or a comment
        if lines and lines[-1].rstrip("\r") == ".":
            lines = lines[:-1]
        body = [ln[1:] if ln.startswith("..") else ln for ln in lines]
        return "\n".join(ln.rstrip("\r") for ln in body) + ("\n" if body else "")
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        out, i, inner = [], 0, value[1:-1]
        while i < len(inner):
            c = inner[i]
            if c == "\\" and i + 1 < len(inner):
                i += 1
                c = inner[i]
            out.append(c)
            i += 1
        return "".join(out)
    return value


def strings(value) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(string(v) for v in value)
    return (string(value),)


def _address_ok(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(at and local and "." in domain and not any(c.isspace() or c in "<>,;\"" for c in address))


def _number(value) -> int:
    text = str(value)
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    digits = text[:-1] if mult > 1 else text
    return int(digits) * mult


class _Builder:
    def __init__(self):
        self.count = 0
        self.require: list[str] = []

    def _tick(self, depth: int) -> None:
        self.count += 1
        if self.count > MAX_COMMANDS:
            raise SieveError(f"more than {MAX_COMMANDS} commands and tests")
        if depth > MAX_NESTING:
            raise SieveError(f"nested deeper than {MAX_NESTING}")

    def block(self, cmds: list, depth: int) -> tuple:
        out: list = []
        branches: list = []
        for c in cmds:
            self._tick(depth)
            name = c.name
            if name in ("elsif", "else"):
                test = self.test(c.arguments["test"], depth + 1) if name == "elsif" else None
                branches.append((test, self.block(c.children, depth + 1)))
                continue
            if branches:
                out.append(If(tuple(branches)))
                branches = []
            if name == "if":
                branches = [(self.test(c.arguments["test"], depth + 1), self.block(c.children, depth + 1))]
            elif name == "require":
                for ext in strings(c.arguments["capabilities"]):
                    if ext not in SUPPORTED:
                        raise SieveError(f"unsupported extension: {ext}")
                    self.require.append(ext)
            else:
                out.append(self.action(c))
        if branches:
            out.append(If(tuple(branches)))
        return tuple(out)

    def action(self, c):
        a = c.arguments
        match c.name:
            case "keep":
                return Keep(self._flags(c))
            case "discard":
                return Discard()
            case "stop":
                return Stop()
            case "fileinto":
                return FileInto(string(a["mailbox"]), "copy" in a, "create" in a, self._flags(c))
            case "setflag" | "addflag" | "removeflag":
                return Flags(c.name[:-4], strings(a["list-of-flags"]))
            case "set":
                name = string(a["name"])
                if not _IDENTIFIER.fullmatch(name):
                    raise SieveError(f"set: {name[:40]!r} is not a variable name")
                mods = tuple(m for m in _MODIFIER_ORDER if m in a)
                if len({m for m in mods if m in ("lower", "upper")}) > 1 or len({m for m in mods if m in ("lowerfirst", "upperfirst")}) > 1:
                    raise SieveError("set: two modifiers of the same precedence")
                return Set(name.lower(), string(a["value"]), mods)
            case "include":
                if str(a.get("location", "")) == ":global":
                    raise SieveError("include :global: there are no global scripts here")
                return Include(string(a["script-name"]), "once" in a, "optional" in a)
            case "return":
                return Return()
            case "redirect":
                address = string(a["address"])
                if "${" not in address and not _address_ok(address):
                    raise SieveError(f"redirect: {address[:80]!r} is not an address")
                return Redirect(address, "copy" in a)
            case "reject" | "ereject":
                return Reject(string(a["text"]))
            case "vacation":
                return self.vacation(c)
            case _:
                raise SieveError(f"unsupported command: {c.name}")

    @staticmethod
    def vacation(c) -> Vacation:
        a, extra = c.arguments, c.extra_arguments
        days = min(max(_number(extra["days"]), 1), MAX_VACATION_DAYS) if "days" in a else 7
        return Vacation(
            string(a["reason"]), days,
            string(extra["subject"]) if "subject" in a else None,
            string(extra["from"]) if "from" in a else None,
            strings(extra["addresses"]) if "addresses" in a else (),
            string(extra["handle"]) if "handle" in a else None,
            "mime" in a,
        )  # fmt: skip

    @staticmethod
    def _flags(c) -> tuple[str, ...] | None:
        if "flags" not in c.arguments:
            return None
        return strings(c.extra_arguments.get("flags", '""'))


    def test(self, t, depth: int):
        self._tick(depth)
        a = t.arguments
        match t.name:
            case "true" | "false":
                return Const(t.name == "true")
            case "not":
                return Not(self.test(a["test"], depth + 1))
            case "allof" | "anyof":
                tests = tuple(self.test(x, depth + 1) for x in a["tests"])
                return AllOf(tests) if t.name == "allof" else AnyOf(tests)
            case "header":
                return Header(strings(a["header-names"]), strings(a["key-list"]), self._comparing(t))
            case "address" | "envelope":
                part = str(a.get("address-part", ":all"))[1:]
                return Address(strings(a["header-list"]), strings(a["key-list"]), self._comparing(t), part,
                               t.name == "envelope")  # fmt: skip
            case "exists":
                return Exists(strings(a["header-names"]))
            case "size":
                return Size(str(a["comparator"]) == ":over", _number(a["limit"]))
            case "body":
                transform = str(a.get("body-transform", ":text"))[1:]
                if transform not in ("text", "raw"):
                    raise SieveError(f"body :{transform} is not supported")
                return Body(strings(a["key-list"]), self._comparing(t), transform)
            case "hasflag":
                return HasFlag(strings(a["list-of-flags"]), self._comparing(t))
            case "mailboxexists":
                return MailboxExists(strings(a["mailbox-names"]))
            case "string":
                return String(strings(a["source"]), strings(a["key-list"]), self._comparing(t))
            case "date" | "currentdate":
                zone = t.extra_arguments.get("zone")
                zone = None if zone is None else string(zone)
                if zone is not None and "${" not in zone and not _ZONE.fullmatch(zone):
                    raise SieveError(f"{t.name}: bad zone {zone[:20]!r} (+hhmm or -hhmm)")
                part = string(a["date-part"]).lower()
                if part not in DATE_PARTS and "${" not in part:
                    raise SieveError(f"{t.name}: unknown date part {part[:20]!r}")
                header = string(a["header-name"]) if t.name == "date" else None
                return Date(header, part, strings(a["key-list"]), self._comparing(t), zone,
                            str(a.get("zone", "")) == ":originalzone")  # fmt: skip
            case _:
                raise SieveError(f"unsupported test: {t.name}")

    def _comparing(self, t) -> Match:
        """The match type (with its relation) and comparator; sievelib keeps the comparator's name and
        the relation as extra arguments."""
        kind = str(t.arguments.get("match-type", ":is"))[1:].lower()
        if kind not in ("is", "contains", "matches", "count", "value"):
            raise SieveError(f"unsupported match type :{kind}")
        relation = ""
        if kind in ("count", "value"):
            relation = string(t.extra_arguments.get("match-type", '""')).lower()
            if relation not in RELATIONS:
                raise SieveError(f":{kind}: bad relation {relation[:10]!r}")
        comparator = "i;ascii-casemap"
        if t.extra_arguments.get("comparator") is not None:
            comparator = string(t.extra_arguments["comparator"])
        if comparator == "i;ascii-numeric":
            if "comparator-i;ascii-numeric" not in self.require:
                raise SieveError('i;ascii-numeric needs require "comparator-i;ascii-numeric"')
            if kind in ("contains", "matches"):
                raise SieveError(f"i;ascii-numeric cannot do :{kind}")
        return Match(kind, comparator, relation)
