"""Pure parsing for SMTP: paths and addresses, ESMTP parameters, xtext, and checks of message text.

No I/O and no state. Every function raises `PermFailure(reply)` with the reply the client gets when
the input is not acceptable (syntax 501, unknown parameter 555, size 552...), so the session just
sends `exc.reply`. Addresses follow RFC 5321 §4.1.2 (with RFC 6531 UTF-8 when SMTPUTF8 was given);
a source route (`@a,@b:user@c`) is accepted and ignored (§4.1.1.3, §C), which is also what keeps
`@local:user@other` from being a relay trick: what remains is `user@other`, a remote address.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from mailflow.errors import PermFailure
from mailflow_smtp_ingress import replies as R

# RFC 5321 §4.5.3.1: size limits of the parts of a path.
MAX_LOCAL_PART = 64  # §4.5.3.1.1
MAX_DOMAIN = 255  # §4.5.3.1.2
MAX_PATH = 256  # §4.5.3.1.3
MAX_ENVID = 100  # RFC 3461 §4.4
MAX_ORCPT = 500  # RFC 3461 §4.2

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*\Z")
_DOT_STRING_UTF8 = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+(?:\.[{_ATEXT}\u0080-\U0010ffff]+)*\Z")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
_LABEL_UTF8 = (
    r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\-\u0080-\U0010ffff]{0,61}[A-Za-z0-9\u0080-\U0010ffff])?"
)
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
_DOMAIN_UTF8 = re.compile(rf"{_LABEL_UTF8}(?:\.{_LABEL_UTF8})*\Z")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*\Z")
_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+\Z")  # RFC 5321 esmtp-value (+UTF-8, RFC 6531)
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*\Z")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+\Z")
_HELO_SAFE = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")


@dataclass(frozen=True, slots=True)
class Address:
    local: str  # the local part, unquoted
    domain: str  # lower-cased; "" only for the special <postmaster>
    route: str = ""  # a source route given before it (ignored, kept for the log)

    @property
    def address(self) -> str:
        local = self.local
        if not _DOT_STRING_UTF8.match(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{local}@{self.domain}" if self.domain else local

    @property
    def ascii(self) -> bool:
        return self.address.isascii()

    def __str__(self) -> str:
        return self.address


def split_path(arg: str) -> tuple[str, str]:
    """'<a@b> SIZE=10' -> ('a@b', 'SIZE=10'); 'a@b SIZE=10' (bare, lenient) -> ('a@b', 'SIZE=10').
    The brackets are removed; quoted strings may hold '>' and spaces."""
    arg = arg.lstrip(" ")
    if not arg.startswith("<"):
        path, _, rest = arg.partition(" ")
        if "<" in path or ">" in path:
            raise PermFailure(R.R501_BAD_ADDRESS, "bad bare path")
        return path, rest.strip(" ")
    i, n, quoted = 1, len(arg), False
    while i < n:
        ch = arg[i]
        if quoted and ch == "\\":
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            rest = arg[i + 1 :]
            if rest and not rest.startswith(" "):
                raise PermFailure(R.R501_BAD_ADDRESS, "text after path")
            return arg[1:i], rest.strip(" ")
        i += 1
    raise PermFailure(R.R501_BAD_ADDRESS, "unterminated path")


def _unquote(quoted: str) -> str:
    """The inside of a Quoted-string (RFC 5321 qtextSMTP / quoted-pairSMTP) with the escapes removed."""
    out = []
    i, n = 0, len(quoted)
    while i < n:
        ch = quoted[i]
        if ch == "\\":
            if i + 1 >= n or not (" " <= quoted[i + 1] <= "~"):
                raise PermFailure(R.R501_BAD_ADDRESS, "bad quoted-pair")
            out.append(quoted[i + 1])
            i += 2
            continue
        if ch == '"' or ch < " " or ch == "\x7f":
            raise PermFailure(R.R501_BAD_ADDRESS, "bad character in quoted string")
        out.append(ch)
        i += 1
    return "".join(out)


def _domain(text: str, utf8: bool) -> str:
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1]
        try:
            if inner[:5].lower() == "ipv6:":
                ipaddress.IPv6Address(inner[5:])
                return "[IPv6:" + inner[5:].lower() + "]"
            ipaddress.IPv4Address(inner)
            return text
        except ValueError:
            raise PermFailure(R.R501_BAD_ADDRESS, "bad address literal") from None
    if text.endswith("."):
        text = text[:-1]  # a trailing root dot is harmless; accept it
    if len(text.encode()) > MAX_DOMAIN:
        raise PermFailure(R.R501_BAD_ADDRESS, "domain too long")
    if not (_DOMAIN_UTF8 if utf8 else _DOMAIN).match(text):
        if not utf8 and not text.isascii():
            raise PermFailure(R.R553_NEEDS_SMTPUTF8, "non-ASCII domain without SMTPUTF8")
        raise PermFailure(R.R501_BAD_ADDRESS, "bad domain")
    return text.lower()


def _route(route: str, utf8: bool) -> None:
    """A-d-l = At-domain *( "," At-domain ); every At-domain is "@" Domain."""
    for part in route.split(","):
        if not part.startswith("@"):
            raise PermFailure(R.R501_BAD_ADDRESS, "bad source route")
        _domain(part[1:], utf8)


def parse_address(path: str, utf8: bool = False, allow_postmaster: bool = False) -> Address:
    """The inside of <...>: [route ":"] local-part "@" domain. Raises PermFailure with a 501/553 reply."""
    if len(path.encode()) > MAX_PATH - 2:
        raise PermFailure(R.R501_BAD_ADDRESS, "path too long")
    if not utf8 and not path.isascii():
        raise PermFailure(R.R553_NEEDS_SMTPUTF8, "non-ASCII address without SMTPUTF8")
    if not path.isprintable():  # control characters (C-speed; a genexpr costs ~10 us per address)
        raise PermFailure(R.R501_BAD_ADDRESS, "control character in address")
    route = ""
    if path.startswith("@"):
        colon = path.find(":")
        if colon < 0:
            raise PermFailure(R.R501_BAD_ADDRESS, "source route without mailbox")
        route, path = path[:colon], path[colon + 1 :]
        _route(route, utf8)
    if allow_postmaster and path.lower() == "postmaster":
        return Address("postmaster", "", route)
    if path.startswith('"'):
        end = 1
        while end < len(path):
            if path[end] == "\\":
                end += 2
                continue
            if path[end] == '"':
                break
            end += 1
        if end >= len(path) or path[end + 1 : end + 2] != "@":
            raise PermFailure(R.R501_BAD_ADDRESS, "bad quoted local part")
        local = _unquote(path[1:end])
        domain = path[end + 2 :]
    else:
        local, at, domain = path.rpartition("@")
        if not at or not (_DOT_STRING_UTF8 if utf8 else _DOT_STRING).match(local):
            raise PermFailure(R.R501_BAD_ADDRESS, "bad local part")
    if not local or len(local.encode()) > MAX_LOCAL_PART:
        raise PermFailure(R.R501_BAD_ADDRESS, "local part empty or too long")
    return Address(local, _domain(domain, utf8), route)


def parse_params(text: str) -> dict[str, str | None]:
    """'SIZE=100 BODY=8BITMIME SMTPUTF8' -> {'SIZE': '100', 'BODY': '8BITMIME', 'SMTPUTF8': None}."""
    params: dict[str, str | None] = {}
    for item in text.split():
        key, eq, value = item.partition("=")
        if not _KEYWORD.match(key) or (eq and not _VALUE.match(value)):
            raise PermFailure(R.R501_SYNTAX, f"bad parameter {item[:40]!r}")
        key = key.upper()
        if key in params:
            raise PermFailure(R.R501_SYNTAX.with_text(f"Duplicate parameter {key}"), "duplicate parameter")
        params[key] = value if eq else None
    return params


def xtext_decode(value: str) -> str:
    """RFC 3461 §4: '+' followed by two upper-case hex digits stands for that octet."""
    if not _XTEXT.match(value):
        raise PermFailure(R.R501_SYNTAX.with_text("Bad xtext value"), "bad xtext")
    if "+" not in value:
        return value
    out = bytearray()
    i = 0
    while i < len(value):
        if value[i] == "+":
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            out += value[i].encode()
            i += 1
    return out.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class MailParams:
    size: int | None = None  # RFC 1870 SIZE=
    body_8bit: bool = False  # RFC 6152 BODY=8BITMIME
    smtputf8: bool = False  # RFC 6531
    ret: str | None = None  # RFC 3461 RET=FULL|HDRS
    envid: str | None = None  # RFC 3461 ENVID=, decoded
    auth: str | None = None  # RFC 4954 AUTH=, kept for the log only
    requiretls: bool = False  # RFC 8689 REQUIRETLS: every later hop over authenticated TLS, or a bounce


@dataclass(frozen=True, slots=True)
class RcptParams:
    notify: tuple[str, ...] = ()  # RFC 3461 NOTIFY=
    orcpt: str | None = None  # RFC 3461 ORCPT=, "addr-type;decoded address"


def _need_value(key: str, value: str | None) -> str:
    if value is None or value == "":
        raise PermFailure(R.R501_SYNTAX.with_text(f"{key} needs a value"), f"{key} without value")
    return value


def mail_params(params: dict[str, str | None], max_size: int) -> MailParams:
    size = body_8bit = smtputf8 = ret = envid = auth = requiretls = None
    for key, value in params.items():
        if key == "SIZE":
            v = _need_value(key, value)
            if not v.isdigit() or len(v) > 20:
                raise PermFailure(R.R501_SYNTAX.with_text("Bad SIZE value"), "bad SIZE")
            size = int(v)
            if max_size and size > max_size:
                raise PermFailure(R.R552_TOO_BIG, f"declared SIZE {size}")
        elif key == "BODY":
            v = _need_value(key, value).upper()
            if v not in ("7BIT", "8BITMIME"):
                raise PermFailure(R.R501_SYNTAX.with_text("BODY must be 7BIT or 8BITMIME"), "bad BODY")
            body_8bit = v == "8BITMIME"
        elif key == "SMTPUTF8":
            if value is not None:
                raise PermFailure(R.R501_SYNTAX.with_text("SMTPUTF8 takes no value"), "bad SMTPUTF8")
            smtputf8 = True
        elif key == "RET":
            v = _need_value(key, value).upper()
            if v not in ("FULL", "HDRS"):
                raise PermFailure(R.R501_SYNTAX.with_text("RET must be FULL or HDRS"), "bad RET")
            ret = v
        elif key == "ENVID":
            envid = xtext_decode(_need_value(key, value))
            if len(envid) > MAX_ENVID:
                raise PermFailure(R.R501_SYNTAX.with_text("ENVID too long"), "long ENVID")
        elif key == "AUTH":
            auth = xtext_decode(_need_value(key, value))
        elif key == "REQUIRETLS":
            if value is not None:
                raise PermFailure(R.R501_SYNTAX.with_text("REQUIRETLS takes no value"), "bad REQUIRETLS")
            requiretls = True
        else:
            raise PermFailure(R.R555_UNKNOWN_PARAMETER.with_text(f"Unsupported parameter {key[:20]}"), key)
    return MailParams(size, bool(body_8bit), bool(smtputf8), ret, envid, auth, bool(requiretls))


_NOTIFY = ("SUCCESS", "FAILURE", "DELAY")


def rcpt_params(params: dict[str, str | None]) -> RcptParams:
    notify: tuple[str, ...] = ()
    orcpt = None
    for key, value in params.items():
        if key == "NOTIFY":
            items = [v.upper() for v in _need_value(key, value).split(",")]
            ok = items == ["NEVER"] or (all(v in _NOTIFY for v in items) and len(set(items)) == len(items))
            if not ok:
                raise PermFailure(R.R501_SYNTAX.with_text("Bad NOTIFY value"), "bad NOTIFY")
            notify = tuple(items)
        elif key == "ORCPT":
            addr_type, semi, addr = _need_value(key, value).partition(";")
            if not semi or not _ADDR_TYPE.match(addr_type) or not addr:
                raise PermFailure(R.R501_SYNTAX.with_text("Bad ORCPT value"), "bad ORCPT")
            decoded = xtext_decode(addr) if addr_type.lower() != "utf-8" else addr
            if decoded.startswith("<") and decoded.endswith(">"):  # some clients bracket it
                decoded = decoded[1:-1]
            if len(decoded) > MAX_ORCPT:
                raise PermFailure(R.R501_SYNTAX.with_text("ORCPT too long"), "long ORCPT")
            orcpt = f"{addr_type};{decoded}"
        else:
            raise PermFailure(R.R555_UNKNOWN_PARAMETER.with_text(f"Unsupported parameter {key[:20]}"), key)
    return RcptParams(notify, orcpt)


# --- message text ---------------------------------------------------------------------------------------


def check_text(data: bytes, max_line: int) -> R.Reply | None:
    """Why `data` (a whole message, CRLF lines) cannot be taken, or None. Bare CR and bare LF are
    refused outright, never repaired: that is what makes SMTP smuggling (a `<LF>.<LF>` that a later
    hop would read as the end of data) impossible through us."""
    if b"\0" in data:
        return R.R550_NUL_DATA
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        return R.R550_BARE_LF_DATA
    longest = max_line - 2  # max_line counts the CRLF
    # split+max is linear and C-speed; a regex like [^\r\n]{999} rescans every position (~1 ms per 4 KiB).
    if len(data) > longest and max(map(len, data.split(b"\r\n"))) > longest:
        return R.R500_TEXT_LINE_TOO_LONG
    return None


def unstuff(data: bytes) -> bytes:
    """RFC 5321 §4.5.2: drop the first '.' of every line that starts with one."""
    if data.startswith(b"."):
        data = data[1:]
    if b"\r\n." in data:
        data = data.replace(b"\r\n.", b"\r\n")
    return data


def sanitize_helo(text: str) -> str:
    """A HELO/EHLO argument as it may appear in a Received: header: no spaces, parentheses or CRLF."""
    clean = _HELO_SAFE.sub("", text)[:255]
    return clean or "unknown"
