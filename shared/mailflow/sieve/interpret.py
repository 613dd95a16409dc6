"""Run a compiled Sieve script (mailflow.sieve.script) on one message: `run(script, message, envelope,
mailboxes, now)` -> `Outcome`, the mailboxes the message goes into and with which flags.

Pure: no I/O, and the clock is the caller's `now` (currentdate). Bounded: a script has no loops (each
command runs at most once), at most MAX_ACTIONS keep/fileinto actions are taken (more raises
`SieveRuntimeError`), variables are bounded (variables.py), the comparisons of one run share one
match.Budget (past it: SieveRuntimeError), and the message is read only as far as the
tests need: headers from its header section (at most MAX_HEADER_BYTES), the body (for `body`) from its
first MAX_BODY_BYTES. Semantics (RFC 5228 §2.10, RFC 5232, RFC 3894, RFC 5490, RFC 5229, RFC 5231, RFC 5260):
- `keep` files into INBOX; `fileinto` into its mailbox, with :create asking for it to be made when it is
  missing (otherwise the store files into INBOX instead: RFC 5228 §4.1's "keep" when fileinto fails);
- keep, fileinto (without :copy) and discard cancel the implicit keep; `stop` ends the script; when the
  implicit keep is still on at the end the message goes to INBOX;
- imap4flags: setflag/addflag/removeflag change the internal flags; keep and fileinto without :flags
  (and the implicit keep) take the internal flags as they are at that moment; `hasflag` tests them;
- one mailbox is filed into once (a second fileinto of it merges the flags);
- redirect (at most MAX_REDIRECTS addresses, each once) cancels the implicit keep unless :copy; reject
  and ereject cancel it, at most one, never with keep, fileinto, redirect or vacation (RFC 5429 §2.1);
  vacation (at most one) does not: the Outcome carries them, and mailflow.sieve.replies builds the
  messages they send;
- header and address values are unfolded and RFC 2047-decoded; address parts come from
  email.utils.getaddresses; `exists` is true when every named header is present;
- subaddress (RFC 5233): :user is the local part before the first "+", :detail what follows it (an
  address without "+" has no detail: it never matches a :detail test, not even "");
- variables: every string of a test or an action is expanded when the script requires "variables";
  a :matches that succeeds sets ${0} (the value) and ${1}.. (what each wildcard took, leftmost-shortest);
- relational: :value compares each value with each key in the comparator's order; :count compares the
  number of values (addresses for address/envelope, non-empty strings for `string`) as a number string;
- include: :personal scripts from `library` (the user's other scripts), each with its own variables;
  a missing one fails the script unless :optional; :once runs one once; a loop fails; `return` ends
  the included script (the main one: as stop);
- date: the first header of that name (after the last ";" for Received:), converted to :zone, kept in
  its own zone with :originalzone, else to UTC (this server's local zone); currentdate uses `now`.
Any problem while running raises `SieveRuntimeError`; the caller keeps the message in INBOX.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.header import decode_header, make_header

from mailflow.sieve import dates
from mailflow.sieve import script as s
from mailflow.sieve.match import Budget, TooCostly, compare, matches, relate
from mailflow.sieve.variables import VariableError, Variables, modify

MAX_ACTIONS = 64
MAX_REDIRECTS = 4  # RFC 5228 §4.2 lets a site limit them
MAX_INCLUDES = 32  # include commands run, in all
MAX_INCLUDE_DEPTH = 8
MAX_HEADER_BYTES = 256 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024
INBOX = "INBOX"
SUBADDRESS_SEPARATOR = "+"  # RFC 5233 :user/:detail; the store's default recipient_delimiter
_ZONE = re.compile(r"[+-][0-9]{4}")
SYSTEM_FLAGS = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")}


class SieveRuntimeError(RuntimeError):
    pass


@dataclass
class Delivery:
    mailbox: str
    flags: tuple[str, ...] = ()
    create: bool = False


@dataclass
class Outcome:
    deliveries: list[Delivery] = field(default_factory=list)  # empty: not filed anywhere
    redirects: list[str] = field(default_factory=list)  # addresses to resend the message to
    reject: str | None = None  # the reason to tell the sender (RFC 5429), the message not filed
    vacation: s.Vacation | None = None  # a reply to consider (its strings expanded): mailflow.sieve.replies

    @property
    def discarded(self) -> bool:
        return not (self.deliveries or self.redirects or self.reject is not None)


@dataclass(frozen=True)
class Envelope:
    mail_from: str  # "" for the null reverse-path
    rcpt_to: str


class Message:
    """The parts of a raw message tests look at, each parsed the first time it is asked for."""

    def __init__(self, raw: bytes):
        self.raw = raw
        self.size = len(raw)
        self._headers: list[tuple[str, str]] | None = None
        self._text: str | None = None

    @property
    def headers(self) -> list[tuple[str, str]]:
        """(lower-case name, unfolded decoded value) in order."""
        if self._headers is None:
            self._headers = _headers(self._head())
        return self._headers

    def head(self) -> bytes:
        """The header section (up to MAX_HEADER_BYTES), without the blank line after it."""
        return self._head()

    def _head(self) -> bytes:
        head = self.raw[:MAX_HEADER_BYTES]
        for sep in (b"\r\n\r\n", b"\n\n"):
            i = head.find(sep)
            if i >= 0:
                return head[:i]
        return head

    def values(self, name: str) -> list[str]:
        n = name.lower()
        return [v for k, v in self.headers if k == n]

    def body(self, transform: str) -> str:
        if transform == "raw":
            head = self._head()
            start = len(head) + (4 if self.raw[len(head) : len(head) + 4] == b"\r\n\r\n" else 2)
            return self.raw[start : start + MAX_BODY_BYTES].decode("utf-8", "replace")
        if self._text is None:
            self._text = _text_parts(self.raw[:MAX_BODY_BYTES])
        return self._text


def _decode(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # a broken encoded-word: the text as it came
        return value


def _headers(head: bytes) -> list[tuple[str, str]]:
    text = head.decode("utf-8", "replace")
    out: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t") and out:
            name, value = out[-1]
            out[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if colon and name and " " not in name:
            out.append((name.strip().lower(), value.strip()))
    return [(n, _decode(v)) for n, v in out]


def _text_parts(raw: bytes) -> str:
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        texts = []
        for part in msg.walk():
            if part.get_content_maintype() != "text" or part.is_multipart():
                continue
            payload = part.get_payload(decode=True) or b""
            charset = part.get_content_charset() or "utf-8"
            try:
                texts.append(payload.decode(charset, "replace"))
            except LookupError:
                texts.append(payload.decode("utf-8", "replace"))
        return "\n".join(texts)
    except Exception:  # a message email cannot walk: its bytes as text
        return raw.decode("utf-8", "replace")


def _flag_list(values: tuple[str, ...]) -> list[str]:
    """Flag strings (each may hold several, space-separated) as flag names, system flags spelled right."""
    out: list[str] = []
    seen: set[str] = set()
    for v in values:
        for f in v.split():
            f = SYSTEM_FLAGS.get(f.lower(), f)
            if f.lower() == "\\recent" or f.lower() in seen:
                continue
            if f.startswith("\\") and f.lower() not in SYSTEM_FLAGS:
                continue  # no such system flag: RFC 5232 §2 says ignore it
            seen.add(f.lower())
            out.append(f)
    return out


class _Stop(Exception):
    pass


class _Return(Exception):
    pass


Library = Mapping[str, "s.Script | s.SieveError"]  # the user's other scripts by name, for include


class _Run:
    def __init__(self, script: s.Script, message: Message, envelope: Envelope, mailboxes: frozenset[str], now: float,
                 library: Library, name: str):  # fmt: skip
        self.msg, self.env, self.mailboxes, self.now = message, envelope, mailboxes, now
        self.library, self.running, self.included = library, [name], 0
        self.once: set[str] = set()
        self.budget = Budget()
        self.vars = Variables() if script.variables else None
        self.flags: list[str] = []
        self.implicit_keep = True
        self.deliveries: dict[str, Delivery] = {}
        self.actions = 0
        self.explicit = False  # keep or fileinto ran (reject may not go with them)
        self.redirects: list[str] = []
        self.reject: str | None = None
        self.vacation: s.Vacation | None = None

    def x(self, text: str) -> str:
        """A string of the script as it reads now: variables expanded when the script uses them."""
        return text if self.vars is None else self.vars.expand(text)

    def xs(self, texts: tuple[str, ...]) -> tuple[str, ...]:
        return texts if self.vars is None else tuple(self.vars.expand(t) for t in texts)

    def file(self, mailbox: str, flags: tuple[str, ...] | None, create: bool = False, counted: bool = True) -> None:
        self.actions += counted
        if self.actions > MAX_ACTIONS:
            raise SieveRuntimeError(f"more than {MAX_ACTIONS} actions")
        key = INBOX if mailbox.upper() == INBOX else mailbox
        chosen = list(self.flags) if flags is None else _flag_list(self.xs(flags))
        have = self.deliveries.get(key)
        if have is None:
            self.deliveries[key] = Delivery(key, tuple(chosen), create)
        else:
            have.flags = tuple(_flag_list(have.flags + tuple(chosen)))
            have.create = have.create or create

    def block(self, commands: tuple) -> None:
        for c in commands:
            match c:
                case s.If(branches=branches):
                    for test, body in branches:
                        if test is None or self.test(test):
                            self.block(body)
                            break
                case s.Keep(flags=flags):
                    self.file(INBOX, flags)
                    self.implicit_keep, self.explicit = False, True
                case s.FileInto():
                    self.file(self.x(c.mailbox), c.flags, c.create)
                    self.explicit = True
                    if not c.copy:
                        self.implicit_keep = False
                case s.Redirect(address=address, copy=copy):
                    self.redirect(self.x(address))
                    if not copy:
                        self.implicit_keep = False
                case s.Reject(reason=reason):
                    if self.reject is not None:
                        raise SieveRuntimeError("more than one reject")
                    self.reject, self.implicit_keep = self.x(reason), False
                case s.Vacation():
                    if self.vacation is not None:
                        raise SieveRuntimeError("more than one vacation")
                    self.vacation = replace(c, reason=self.x(c.reason), subject=c.subject and self.x(c.subject),
                                            from_=c.from_ and self.x(c.from_), addresses=self.xs(c.addresses),
                                            handle=c.handle and self.x(c.handle))  # fmt: skip
                case s.Discard():
                    self.implicit_keep = False
                case s.Stop():
                    raise _Stop
                case s.Flags(op=op, flags=flags):
                    self.change_flags(op, _flag_list(self.xs(flags)))
                case s.Set(name=name, value=value, modifiers=mods) if self.vars is not None:
                    self.vars.set(name, modify(self.x(value), mods))
                case s.Include():
                    self.include(c)
                case s.Return():
                    raise _Return
                case _:
                    raise SieveRuntimeError(f"cannot run {type(c).__name__}")

    def include(self, c: s.Include) -> None:
        """RFC 6609 §3.2: run another of the user's scripts here, with its own variables; its actions
        count as this one's, its `stop` ends everything, its `return` only itself."""
        name = self.x(c.name)
        if c.once and name in self.once:
            return
        if name in self.running:
            raise SieveRuntimeError(f"include loop through {name[:60]!r}")
        found = self.library.get(name)
        if found is None:
            if c.optional:
                return
            raise SieveRuntimeError(f"included script {name[:60]!r} does not exist")
        if isinstance(found, s.SieveError):
            raise SieveRuntimeError(f"included script {name[:60]!r}: {found}")
        self.included += 1
        if len(self.running) > MAX_INCLUDE_DEPTH or self.included > MAX_INCLUDES:
            raise SieveRuntimeError(f"more than {MAX_INCLUDES} includes, or nested deeper than {MAX_INCLUDE_DEPTH}")
        if c.once:
            self.once.add(name)
        saved = self.vars
        self.vars = Variables() if found.variables else None
        self.running.append(name)
        try:
            self.block(found.commands)
        except _Return:
            pass
        finally:
            self.running.pop()
            self.vars = saved

    def redirect(self, address: str) -> None:
        local, at, domain = address.rpartition("@")
        if not (at and local and domain) or any(c.isspace() or c in "<>,;" for c in address):
            raise SieveRuntimeError(f"redirect to {address[:80]!r}: not an address")
        if address.lower() not in (a.lower() for a in self.redirects):
            if len(self.redirects) >= MAX_REDIRECTS:
                raise SieveRuntimeError(f"more than {MAX_REDIRECTS} redirects")
            self.redirects.append(address)

    def change_flags(self, op: str, flags: list[str]) -> None:
        if op == "set":
            self.flags = flags
        elif op == "add":
            self.flags = _flag_list(tuple(self.flags) + tuple(flags))
        else:
            gone = {f.lower() for f in flags}
            self.flags = [f for f in self.flags if f.lower() not in gone]

    def check(self, values: list[str], keys: tuple[str, ...], m: s.Match) -> bool:
        """Does any value match any key? :count compares how many values there are; a :matches that
        succeeds sets the match variables (RFC 5229 §3.2)."""
        keys = self.xs(keys)
        if m.kind == "count":
            return any(relate(str(len(values)), k, m) for k in keys)
        if m.kind == "matches":
            for v in values:
                for k in keys:
                    caught = matches(v, k, m.comparator, self.budget)
                    if caught is not None:
                        if self.vars is not None:
                            self.vars.matched = caught[:10]
                        return True
            return False
        return any(compare(v, k, m, self.budget) for v in values for k in keys)

    def test(self, t) -> bool:
        match t:
            case s.Const(value=value):
                return value
            case s.Not(test=inner):
                return not self.test(inner)
            case s.AllOf(tests=tests):
                return all(self.test(x) for x in tests)
            case s.AnyOf(tests=tests):
                return any(self.test(x) for x in tests)
            case s.Header(names=names, keys=keys, match=m):
                return self.check([v for n in self.xs(names) for v in self.msg.values(n)], keys, m)
            case s.Address():
                return self.check(self.address_parts(t), t.keys, t.match)
            case s.Exists(names=names):
                return all(self.msg.values(n) for n in self.xs(names))
            case s.Size(over=over, limit=limit):
                return self.msg.size > limit if over else self.msg.size < limit
            case s.Body(keys=keys, match=m, transform=transform):
                return self.check([self.msg.body(transform)], keys, m)
            case s.HasFlag(flags=keys, match=m):
                return self.check(list(self.flags), tuple(k for v in self.xs(keys) for k in v.split()), m)
            case s.MailboxExists(names=names):
                return all((INBOX if n.upper() == INBOX else n) in self.mailboxes for n in self.xs(names))
            case s.String(sources=sources, keys=keys, match=m):
                values = list(self.xs(sources))
                if m.kind == "count":  # RFC 5229 §5: empty strings are not counted
                    values = [v for v in values if v]
                return self.check(values, keys, m)
            case s.Date():
                return self.check(self.date_parts(t), t.keys, t.match)
            case _:
                raise SieveRuntimeError(f"cannot test {type(t).__name__}")

    def date_parts(self, t: s.Date) -> list[str]:
        if t.header is None:
            when: datetime | None = datetime.fromtimestamp(self.now, UTC)
        else:
            found = self.msg.values(self.x(t.header))
            when = dates.header_date(found[0]) if found else None  # the first one (RFC 5260 §4)
            if when is None:
                return []
        zone = self.x(t.zone) if t.zone is not None else None
        if zone is not None:
            if not _ZONE.fullmatch(zone):
                raise SieveRuntimeError(f"bad zone {zone[:20]!r}")
            when = when.astimezone(dates.zone(zone))
        elif not t.original:
            when = when.astimezone(UTC)  # our local zone is UTC
        value = dates.part(when, self.x(t.part).lower())
        if value is None:
            raise SieveRuntimeError(f"unknown date part {t.part[:20]!r}")
        return [value]

    def address_parts(self, t: s.Address) -> list[str]:
        names = self.xs(t.names)
        if t.envelope:
            addrs = []
            for n in names:
                if n.lower() == "from":
                    addrs.append(self.env.mail_from)
                elif n.lower() == "to":
                    addrs.append(self.env.rcpt_to)
        else:
            values = [v for n in names for v in self.msg.values(n)]
            addrs = [a for _, a in email.utils.getaddresses(values) if a]
        out = []
        for a in addrs:
            local, at, domain = a.rpartition("@")
            if not at:
                local, domain = a, ""
            user, plus, detail = local.partition(SUBADDRESS_SEPARATOR)
            if t.part == "detail" and not plus:
                continue  # RFC 5233 §4: no detail, the test is false for this address
            out.append({"localpart": local, "domain": domain, "user": user, "detail": detail}.get(t.part, a))
        return out


def run(
    script: s.Script, message: Message, envelope: Envelope, mailboxes: frozenset[str] = frozenset(), now: float = 0.0,
    library: Library | None = None, name: str = "",
) -> Outcome:
    """`now`: Unix time of the delivery, for `currentdate`; `library`: the user's scripts `include` may
    name (compiled, or the SieveError they gave); `name`: the running script's own (an include loop)."""
    r = _Run(script, message, envelope, mailboxes, now, library or {}, name)
    try:
        r.block(script.commands)
    except (_Stop, _Return):  # return in the main script is stop (RFC 6609 §3.2)
        pass
    except (VariableError, TooCostly) as exc:
        raise SieveRuntimeError(str(exc)) from exc
    except RecursionError as exc:
        raise SieveRuntimeError("nested too deep") from exc
    if r.reject is not None and (r.explicit or r.redirects or r.vacation is not None):
        raise SieveRuntimeError("reject cannot go with keep, fileinto, redirect or vacation (RFC 5429 §2.1)")
    if r.implicit_keep:
        r.file(INBOX, None, counted=False)
    return Outcome(list(r.deliveries.values()), r.redirects, r.reject, r.vacation)
