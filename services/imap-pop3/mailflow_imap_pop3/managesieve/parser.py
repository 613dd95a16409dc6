"""ManageSieve (RFC 5804 §4) input: the bytes a socket gave, cut into whole commands and their arguments.

No I/O. A command is a line of atoms and strings; a string is quoted ("...", with \\ and \" escapes, at most
MAX_QUOTED octets, §4: 1024) or a literal `{n+}` CRLF n octets, after which the command goes on. RFC 5804
has clients send `{n+}` only (there is no continuation to wait for); a `{n}` is taken the same way, its
octets following at once. Limits apply before reading: a line longer than `max_line` is dropped up to
its end and answered NO; a literal larger than `max_literal` (or a command with more than MAX_LITERALS
of them, or more than MAX_ARGS arguments) is fatal, since the client sends it anyway: the session says
BYE and closes. `ParseError` (a bad quoted string, a character no atom may hold) is answered NO and the
session goes on. Nothing here raises anything else for any input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_QUOTED = 1024  # RFC 5804 §4: quoted strings are at most 1024 octets
MAX_LITERALS = 8  # literals in one command (PUTSCRIPT has the most: its name and its script)
MAX_ARGS = 16
_LITERAL_END = re.compile(rb"\{(\d{1,10})\+?\}\Z")
_ATOM_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


class ParseError(ValueError):
    """The command cannot be read; str(exc) is for the client (NO)."""


@dataclass
class Command:
    name: str  # upper case; "" for a line that starts with a string (a SASL response)
    args: list[bytes] = field(default_factory=list)
    atoms: list[bool] = field(default_factory=list)  # per argument: an atom (a number), not a string

    def string(self, i: int, what: str) -> str:
        """Argument i as a UTF-8 string (ParseError if it is missing, an atom, or not UTF-8)."""
        if i >= len(self.args) or self.atoms[i]:
            raise ParseError(f"{self.name} needs {what} as a string")
        try:
            return self.args[i].decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError(f"{what} is not UTF-8") from None

    def number(self, i: int, what: str) -> int:
        if i >= len(self.args) or not self.atoms[i] or not self.args[i].isdigit() or len(self.args[i]) > 10:
            raise ParseError(f"{self.name} needs {what} as a number")
        return int(self.args[i])

    def arity(self, low: int, high: int | None = None) -> None:
        high = low if high is None else high
        if not low <= len(self.args) <= high:
            raise ParseError(f"{self.name} takes {low if low == high else f'{low} to {high}'} arguments")


@dataclass(frozen=True)
class FrameError:
    text: str
    fatal: bool = False


def split_line(line: bytes) -> tuple[list[tuple[bytes, bool]], int | None]:
    """The arguments of one line (value, is_atom) and the size of the literal it ends with, if any."""
    out: list[tuple[bytes, bool]] = []
    literal = None
    m = _LITERAL_END.search(line)
    if m is not None:
        literal = int(m.group(1))
        line = line[: m.start()]
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c in b" \t":
            i += 1
            continue
        if c == 0x22:  # '"'
            value = bytearray()
            i += 1
            while True:
                if i >= n:
                    raise ParseError("unterminated quoted string")
                c = line[i]
                if c == 0x5C:  # backslash: only \\ and \" (QUOTED-SPECIALS)
                    if i + 1 >= n or line[i + 1] not in b'\\"':
                        raise ParseError("bad escape in a quoted string")
                    value.append(line[i + 1])
                    i += 2
                elif c == 0x22:
                    i += 1
                    break
                elif c in b"\r\n\x00":
                    raise ParseError("CR, LF or NUL in a quoted string")
                else:
                    value.append(c)
                    i += 1
                if len(value) > MAX_QUOTED:
                    raise ParseError(f"quoted string longer than {MAX_QUOTED} octets (send a literal)")
            out.append((bytes(value), False))
        else:
            j = i
            while j < n and line[j] in _ATOM_CHARS:
                j += 1
            if j == i or (j < n and line[j] not in b" \t"):
                raise ParseError("unexpected character")
            out.append((line[i:j], True))
            i = j
    return out, literal


class Framer:
    def __init__(self, max_line: int = 8192, max_literal: int = 8192):
        self.limit(max_line, max_literal)
        self._buf = bytearray()
        self._args: list[tuple[bytes, bool]] = []
        self._literal: int | None = None  # octets of the literal being read
        self._literals = 0
        self._skipping = False
        self._error: str | None = None  # a ParseError seen in this command's lines: answered at its end

    def limit(self, max_line: int, max_literal: int) -> None:
        self.max_line, self.max_literal = max_line, max_literal

    def feed(self, data: bytes) -> None:
        self._buf += data

    def discard(self) -> int:
        """Drop everything buffered (after STARTTLS). Returns how many octets."""
        n = len(self._buf)
        self._buf.clear()
        self._args, self._literal, self._literals, self._skipping, self._error = [], None, 0, False, None
        return n

    def next(self) -> Command | FrameError | ParseError | None:
        buf = self._buf
        while True:
            if self._literal is not None:
                if len(buf) < self._literal:
                    return None
                self._args.append((bytes(buf[: self._literal]), False))
                del buf[: self._literal]
                self._literal = None
            i = buf.find(b"\n")
            if i < 0:
                if len(buf) > self.max_line:
                    self._skipping = True
                    buf.clear()
                return None
            line = bytes(buf[:i])
            del buf[: i + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if self._skipping or len(line) > self.max_line:
                self._skipping = False
                self._args, self._literals, self._error = [], 0, None
                return FrameError("line too long")
            if not self._args and not line and self._error is None:
                continue  # an empty line between commands is no command
            try:
                args, literal = split_line(line)
            except ParseError as exc:
                args, literal = [], None
                self._error = self._error or str(exc)
            self._args += args
            if len(self._args) > MAX_ARGS:
                self._args, self._literals, self._error = [], 0, None
                return FrameError("too many arguments", fatal=True)
            if literal is not None:
                self._literals += 1
                if literal > self.max_literal or self._literals > MAX_LITERALS:
                    self._args, self._literals, self._error = [], 0, None
                    return FrameError(f"literal too big (the limit is {self.max_literal} octets)", fatal=True)
                self._literal = literal
                continue
            args, error = self._args, self._error
            self._args, self._literals, self._error = [], 0, None
            if error is not None:
                return ParseError(error)
            if not args:
                return ParseError("empty command")
            if not args[0][1]:  # a string first: an AUTHENTICATE response (name "")
                return Command("", [a for a, _ in args], [atom for _, atom in args])
            name = args[0][0].decode("ascii").upper()
            return Command(name, [a for a, _ in args[1:]], [atom for _, atom in args[1:]])
