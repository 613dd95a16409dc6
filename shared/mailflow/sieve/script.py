"""Sieve scripts (RFC 5228) checked and turned into a small tree of our own: `compile(data)` -> `Script`.

sievelib parses (its lexer and grammar, with the checks it makes: unknown commands, arguments, and
extensions used without `require`); this module then refuses what we do not run and builds the tree
the interpreter (mailflow.sieve.interpret) walks. Pure: no I/O. Every problem raises `SieveError`,
whose text says what and, when the parser knows it, on which line ("line 3: ..."), fit for a
ManageSieve client. Refused:
- a script larger than `max_bytes`, not UTF-8, or nested deeper than MAX_NESTING / with more than
  MAX_COMMANDS commands and tests;
- a `require` of an extension not in SUPPORTED ("unsupported extension: vacation"), and the core
  `redirect` (not run yet: it would have to go through the queue);
- `body :content` (only :raw and :text are run) and imap4flags' variable-name arguments (no variables:
  a syntax error, see SetflagCommand).
sievelib keeps the extensions a script loaded in a class attribute, so parsing is serialised here
(`_LOCK`); parsing is synchronous and bounded by `max_bytes`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sievelib import commands as sc
from sievelib.parser import Parser

# What `require` may name, and what ManageSieve's SIEVE capability lists (RFC 5804 §1.7).
SUPPORTED = (
    "fileinto",  # RFC 5228 §4.1
    "envelope",  # RFC 5228 §5.4
    "imap4flags",  # RFC 5232
    "body",  # RFC 5173 (:raw and :text)
    "copy",  # RFC 3894
    "mailbox",  # RFC 5490 §3: fileinto :create and the mailboxexists test
    "subaddress",  # RFC 5233: :user and :detail address parts ("+" separates them)
    "comparator-i;octet",  # RFC 4790 §9.3, always available (RFC 5228 §2.7.3)
    "comparator-i;ascii-casemap",  # RFC 4790 §9.2, the default
)
MAX_NESTING = 16  # blocks and tests inside one another
MAX_COMMANDS = 2000  # commands and tests in one script
DEFAULT_MAX_BYTES = 64 * 1024


class SieveError(ValueError):
    """The script cannot be run; str(exc) says why (and where, as "line N: ...")."""


class MailboxexistsCommand(sc.TestCommand):
    """RFC 5490 §3.1 `mailboxexists <mailbox-names: string-list>`, which sievelib does not know."""

    args_definition = [{"name": "mailbox-names", "type": ["string", "stringlist"], "required": True}]
    extension = "mailbox"


_FLAGS = {"name": "list-of-flags", "type": ["string", "stringlist"], "required": True}


# imap4flags without variables (RFC 5232 §3-4): one list of flags. sievelib's own classes also take a
# variable name first and then file a lone argument as that name, or drop the name of `hasflag "v" "x"`;
# these replace them (by name), so a variable name is a syntax error here.
class SetflagCommand(sc.ActionCommand):
    args_definition = [_FLAGS]
    extension = "imap4flags"


class AddflagCommand(SetflagCommand):
    pass


class RemoveflagCommand(SetflagCommand):
    pass


class HasflagCommand(sc.TestCommand):
    args_definition = [sc.comparator, sc.match_type, _FLAGS]
    extension = "imap4flags"


# RFC 5233 address parts :user and :detail, which sievelib does not know, for address and envelope.
_ADDRESS_PART = {**sc.address_part, "extension_values": {":user": "subaddress", ":detail": "subaddress"}}
_ADDRESS_ARGS = [
    sc.comparator,
    _ADDRESS_PART,
    sc.match_type,
    {"name": "header-list", "type": ["string", "stringlist"], "required": True},
    {"name": "key-list", "type": ["string", "stringlist"], "required": True},
]


class AddressCommand(sc.TestCommand):
    args_definition = _ADDRESS_ARGS


class EnvelopeCommand(sc.TestCommand):
    args_definition = _ADDRESS_ARGS
    extension = "envelope"


sc.add_commands([
    MailboxexistsCommand, SetflagCommand, AddflagCommand, RemoveflagCommand, HasflagCommand, AddressCommand,
    EnvelopeCommand,
])  # fmt: skip
_LOCK = threading.Lock()

# --- the tree -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """How a test compares: :is/:contains/:matches under i;ascii-casemap or i;octet."""

    kind: str = "is"  # is | contains | matches
    comparator: str = "i;ascii-casemap"


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
class Script:
    commands: tuple
    require: tuple[str, ...] = field(default=())


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
            case "redirect":
                raise SieveError("redirect is not supported")
            case _:
                raise SieveError(f"unsupported command: {c.name}")

    @staticmethod
    def _flags(c) -> tuple[str, ...] | None:
        if "flags" not in c.arguments:
            return None
        return strings(c.extra_arguments.get("flags", '""'))

    @staticmethod
    def _match(a: dict) -> Match:
        kind = str(a.get("match-type", ":is"))[1:]
        if kind not in ("is", "contains", "matches"):
            raise SieveError(f"unsupported match type :{kind}")
        return Match(kind)

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
            case _:
                raise SieveError(f"unsupported test: {t.name}")

    def _comparing(self, t) -> Match:
        """The match type and comparator; sievelib keeps the comparator's name as an extra argument."""
        m = self._match(t.arguments)
        cmp = t.extra_arguments.get("comparator")
        if cmp is not None:
            name = string(cmp)
            if name not in ("i;octet", "i;ascii-casemap"):
                raise SieveError(f"unsupported comparator {name}")
            m = Match(m.kind, name)
        return m
