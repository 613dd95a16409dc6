"""The vacation form's Sieve script (RFC 5230), written by code and read back: pure, no I/O.

`build(v)` writes the script; every piece of the user's text goes into a Sieve quoted string through
`quoted()` (RFC 5228 §2.4.2: only `\\` and `"` need escaping, and a quoted string may hold line breaks),
so no text can end the string early or add a command. We never use `text:` strings: sievelib's lexer
refuses a `text:` holding "$", and a quoted string has no dot-stuffing to get wrong. `read(script)`
gives the settings back only for a script this form made (MARKER on the first line, then exactly a
vacation and at most one `include :personal`); any other script is None, which the page reports as "not
made by this form" rather than guessing. Bad form input raises `FormError` with a text for the user; the
caller still checks the built script with mailflow.sieve.script.compile, as ManageSieve does.

Why `include`: only one script can be active (RFC 5804 §2.8). A user whose filters are active and who
turns the vacation reply on must not lose those filters silently, so the vacation script replies and
then `include :personal`s the script that was active (RFC 6609), which keeps filing as before; turning
the reply off activates that script again. This is what webmail's vacation pages do (they add the
reply to the filters in force), done without rewriting a script the user wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailflow.sieve.script import MAX_VACATION_DAYS, Include, SieveError, Vacation, compile

NAME = "vacation"  # the script the form writes
MARKER = "# Written by the Mailflow web console's vacation form; edit it there."
MAX_SUBJECT = 200  # characters
MAX_MESSAGE = 8000  # characters
MAX_ADDRESSES = 20


class FormError(ValueError):
    """The form's input cannot become a script; str(exc) says why, for the user."""


@dataclass(frozen=True)
class Settings:
    subject: str = ""
    message: str = ""
    days: int = 7  # RFC 5230 §4.1: the default
    addresses: tuple[str, ...] = ()
    include: str | None = None  # the script that was active when the reply was turned on


def quoted(text: str) -> str:
    """`text` as a Sieve quoted string that means exactly `text` (RFC 5228 §2.4.2)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _address(a: str) -> str:
    local, at, domain = a.rpartition("@")
    if not at or not local or not domain or len(a) > 320 or "." not in domain:
        raise FormError(f"{a[:80]!r} is not a mail address")
    if any(c.isspace() or ord(c) < 0x20 or c in '"\\<>,;()[]' for c in a):
        raise FormError(f"{a[:80]!r} is not a mail address")
    return a


def parse_form(subject: str, message: str, days: str, addresses: str, include: str | None) -> Settings:
    """The form's fields as Settings, or FormError. Line breaks in the message are kept as CRLF (a mail
    body's); the subject is one line."""
    if len(subject) > MAX_SUBJECT:
        raise FormError(f"the subject has at most {MAX_SUBJECT} characters")
    if any(ord(c) < 0x20 or c == "\x7f" for c in subject):
        raise FormError("the subject is one line, with no control characters")
    text = message.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    if not text.strip():
        raise FormError("the reply needs a message")
    if len(text) > MAX_MESSAGE:
        raise FormError(f"the message has at most {MAX_MESSAGE} characters")
    if any((ord(c) < 0x20 and c not in "\n\t") or c == "\x7f" for c in text):
        raise FormError("the message has control characters")
    days = days.strip()
    if not days.isdigit() or len(days) > 3 or not 1 <= int(days) <= MAX_VACATION_DAYS:
        raise FormError(f"days is a whole number from 1 to {MAX_VACATION_DAYS} (RFC 5230 §4.1)")
    found = [a.strip() for a in addresses.replace(",", "\n").split("\n") if a.strip()]
    if len(found) > MAX_ADDRESSES:
        raise FormError(f"at most {MAX_ADDRESSES} addresses")
    return Settings(subject, text.replace("\n", "\r\n"), int(days), tuple(_address(a) for a in found), include)


def build(v: Settings) -> bytes:
    require = ["vacation"] + (["include"] if v.include else [])
    args = [f":days {v.days}"]
    if v.subject:
        args.append(":subject " + quoted(v.subject))
    if v.addresses:
        args.append(":addresses [" + ", ".join(quoted(a) for a in v.addresses) + "]")
    lines = [
        MARKER,
        "require [" + ", ".join(quoted(r) for r in require) + "];",
        "vacation " + " ".join(args) + " " + quoted(v.message) + ";",
    ]
    if v.include:
        lines.append("include :personal " + quoted(v.include) + ";")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def read(script: bytes) -> Settings | None:
    """The settings of a script `build` wrote; None for any other script (or one that no longer parses)."""
    if not script.startswith(MARKER.encode() + b"\r\n"):
        return None
    try:
        tree = compile(script)
    except SieveError:
        return None
    cmds = tree.commands
    if not 1 <= len(cmds) <= 2 or not isinstance(cmds[0], Vacation) or cmds[0].mime or cmds[0].from_ or cmds[0].handle:
        return None
    if len(cmds) == 2 and not (isinstance(cmds[1], Include) and not cmds[1].once and not cmds[1].optional):
        return None
    vac = cmds[0]
    include = cmds[1].name if len(cmds) == 2 else None
    return Settings(vac.subject or "", vac.reason, vac.days, vac.addresses, include)
