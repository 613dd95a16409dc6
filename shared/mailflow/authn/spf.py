"""SPF (RFC 7208): may this address send mail for this domain? `check_host` is the RFC's function (§4);
`check` asks it about both identities of an SMTP session, the HELO name and the MAIL FROM (for the
null reverse-path, postmaster@HELO: §2.4).

    helo, mail_from = await check(dns, "192.0.2.1", "alice@example.com", "mx.example.com", "mx.ours.test", now=time.time())

Pure: DNS comes through `mailflow.authn.DnsLookup`, the time is passed in, and nothing here raises for
what DNS or a record holds. Every outcome is an `Spf` with a reason for the log and for an
Authentication-Results comment (printable ASCII, no parentheses, at most `MAX_REASON` characters):

  none       no SPF record, or a domain that cannot have one (not a domain name, one label)    §4.3, §4.5
  pass, fail, softfail, neutral   the qualifier of the first mechanism that matched; neutral if none
             did (§4.7); a fail's explanation (exp=, macro-expanded, printable ASCII, at most
             `MAX_EXPLANATION` characters) in `explanation`, for the 550 text               §6.2
  temperror  a DNS question that could not be answered (the resolver's temp_fail: SERVFAIL, timeout,
             an answer over its size limits); never a fail: the caller answers 451 4.7.x        §4.4, §5
  permerror  a syntax error anywhere in a record (unknown modifiers are ignored), two SPF records, an
             include or redirect of a domain without one, more than 10 DNS-querying terms (include,
             a, mx, ptr, exists, redirect; an include or redirect loop ends here and the reason names
             it), more than 2 void lookups, an mx with more than 10 names               §4.6, §4.6.4

Records are read by a hand-written tokenizer in one pass (no regular expressions), macros (§7) by
another; each term and macro is checked against the ABNF before anything is evaluated.

Checked against the openspf RFC 7208 test suite (release 2014.04, as pyspf 2.0.14 ships it): 202 of
its 203 cases agree; the other expects %{i}'s IPv6 nibbles in the case the client's address was
written in, where ours are lower case (DNS does not mind; only an explanation's text differs).
Why not pyspf: it asks DNS itself, synchronously, through a module-level hook, so it could use
neither the resolver service nor its cache without blocking the event loop.
Cost, measured on the 2-core development machine: a check through an include and a redirect (three
records, four questions) takes ~72 us of CPU here; each question through `DnsClient` adds a NATS round
trip (~1 ms wall, ~0.3 ms CPU for both ends, answered from the resolver's cache).
"""

from __future__ import annotations

import asyncio
import ipaddress
import urllib.parse
from dataclasses import dataclass, field
from typing import Literal

from mailflow.authn import DnsLookup, Spf, SpfResult, together
from mailflow.dns import query_name

MAX_DNS_TERMS = 10  # RFC 7208 §4.6.4: include, a, mx, ptr, exists and redirect in all, includes included
MAX_VOID_LOOKUPS = 2  # §4.6.4: answers with no records (NOERROR and empty, or NXDOMAIN)
MAX_NAMES = 10  # §4.6.4: names an mx (more: permerror) or a ptr (the first 10 are used) looks up
MAX_EXPLANATION = 256  # characters of an exp= text kept (§6.2: "a short message or URL")
MAX_REASON = 300  # characters of a reason

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
QUALIFIERS: dict[str, SpfResult] = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
DNS_TERMS = ("include", "a", "mx", "ptr", "exists")  # and redirect
DELIMITERS = frozenset(".-+,/_=")  # §7.1
LETTERS = frozenset("slodiphv")  # §7.2; c, r and t only in an explanation
EXP_LETTERS = LETTERS | frozenset("crt")
SAFE = {"(": "[", ")": "]", "\\": "/"}  # what a reason holds instead, in an Authentication-Results comment
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")  # §4.6.1 modifier name, after the ALPHA


class PermError(Exception):
    pass


class TempError(Exception):
    pass


# --- records: terms and macro-strings, parsed before anything is evaluated -------------------------


@dataclass(frozen=True, slots=True)
class Macro:
    """`%{letter digits r delimiters}`; %%, %_ and %- are the letters "%", "_" and "-"."""

    letter: str  # lower case
    keep: int = 0  # the DIGIT transformer: the rightmost parts to keep; 0 = all
    reverse: bool = False
    delimiters: str = "."
    escape: bool = False  # an upper-case letter: URL-escaped (§7.3)


MacroString = tuple[str | Macro, ...]


@dataclass(frozen=True, slots=True)
class Mechanism:
    qualifier: str  # + - ~ ?
    kind: str  # one of MECHANISMS
    text: str  # as written, for reasons
    domain: MacroString = ()  # the domain-spec; () = the current domain
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None  # ip4, ip6
    cidr4: int = 32  # a, mx (dual-cidr-length)
    cidr6: int = 128


@dataclass(frozen=True, slots=True)
class Record:
    mechanisms: tuple[Mechanism, ...]
    redirect: MacroString | None = None
    exp: MacroString | None = None


def is_spf(txt: str) -> bool:
    """RFC 7208 §4.5: "v=spf1" in any case, then a space or nothing."""
    return txt[:6].lower() == "v=spf1" and (len(txt) == 6 or txt[6] == " ")


def parse_record(txt: str) -> Record:
    """The terms of an SPF record (`is_spf(txt)`); PermError naming the first term that breaks the ABNF
    of §4.6.1 and §5, or a modifier given twice (§6)."""
    mechanisms: list[Mechanism] = []
    modifiers: dict[str, MacroString] = {}
    for term in txt[6:].split(" "):
        if not term:
            continue  # 1*SP between terms, any SP at the end
        name_end = _modifier_name_end(term)
        if name_end:
            name = term[:name_end].lower()
            known = name in ("redirect", "exp")  # an unknown one may hold any macro letter (§7.1 ABNF)
            value = parse_macro_string(term[name_end + 1 :], exp=not known, what=term)
            if known:
                if name in modifiers:
                    raise PermError(f"{name}= given twice")
                modifiers[name] = _domain_spec(value, term)
            continue  # an unknown modifier: its syntax checked, its value ignored (§6)
        mechanisms.append(_mechanism(term))
    return Record(tuple(mechanisms), modifiers.get("redirect"), modifiers.get("exp"))


def _modifier_name_end(term: str) -> int:
    """The index of the "=" after a modifier name (ALPHA *(ALPHA / DIGIT / "-" / "_" / ".")), else 0."""
    if not ("a" <= term[0].lower() <= "z"):
        return 0
    for i in range(1, len(term)):
        c = term[i]
        if c == "=":
            return i
        if c.lower() not in NAME_CHARS:
            return 0
    return 0


def _mechanism(term: str) -> Mechanism:
    qualifier, rest = ("+", term) if term[0] not in QUALIFIERS else (term[0], term[1:])
    i = 0
    while i < len(rest) and rest[i].isascii() and rest[i].isalnum():
        i += 1
    kind, arg = rest[:i].lower(), rest[i:]
    if kind not in MECHANISMS:
        raise PermError(f"unknown mechanism {_printable(term)}")
    if arg and arg[0] not in ":/":
        raise PermError(f"unknown mechanism {_printable(term)}")
    spec = arg[1:] if arg.startswith(":") else None  # after the ":", if any
    make = lambda **kw: Mechanism(qualifier, kind, _printable(term), **kw)  # noqa: E731
    match kind:
        case "all":
            if arg:
                raise PermError(f"bad {_printable(term)}: all takes nothing")
            return make()
        case "include" | "exists":
            if not spec:
                raise PermError(f"bad {_printable(term)}: a domain is required")
            return make(domain=_domain_spec(parse_macro_string(spec, exp=False, what=term), term))
        case "ptr":
            if arg and spec is None or spec == "":
                raise PermError(f"bad {_printable(term)}")
            return make(domain=_domain_spec(parse_macro_string(spec, exp=False, what=term), term) if spec else ())
        case "a" | "mx":
            body, cidr4, cidr6 = _dual_cidr(spec if spec is not None else arg, term)
            if spec is None and body or spec is not None and not body:
                raise PermError(f"bad {_printable(term)}")
            domain = _domain_spec(parse_macro_string(body, exp=False, what=term), term) if body else ()
            return make(domain=domain, cidr4=cidr4, cidr6=cidr6)
        case _:  # ip4, ip6
            if not spec:
                raise PermError(f"bad {_printable(term)}: an address is required")
            return make(network=_network(kind, spec, term))


def _cidr(digits: str, most: int, term: str) -> int:
    """A CIDR length as the ABNF has it: "0", or no leading zero; at most `most` (§5.6)."""
    if not digits.isdigit() or not digits.isascii() or len(digits) > 3 or (len(digits) > 1 and digits[0] == "0"):
        raise PermError(f"bad CIDR length in {_printable(term)}")
    if int(digits) > most:
        raise PermError(f"bad CIDR length in {_printable(term)}")
    return int(digits)


def _dual_cidr(spec: str, term: str) -> tuple[str, int, int]:
    """(domain-spec, ip4 length, ip6 length) of `domain-spec [ "/" ip4-cidr ] [ "//" ip6-cidr ]`, read from
    the right (a domain-spec may hold "/" only where the ABNF then fails on it)."""
    cidr4, cidr6 = 32, 128
    i = spec.rfind("//")
    if i >= 0 and spec[i + 2 :].isdigit():
        cidr6 = _cidr(spec[i + 2 :], 128, term)
        spec = spec[:i]
    i = spec.rfind("/")
    if i >= 0 and spec[i + 1 :].isdigit():
        cidr4 = _cidr(spec[i + 1 :], 32, term)
        spec = spec[:i]
    return spec, cidr4, cidr6


def _network(kind: str, spec: str, term: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    address, slash, length = spec.partition("/")
    try:
        if kind == "ip4":
            parts = address.split(".")  # the ABNF's dec-octets: no leading zeros, no other forms
            if len(parts) != 4 or any(not p.isdigit() or not p.isascii() or (len(p) > 1 and p[0] == "0") for p in parts):
                raise ValueError(address)
            ip: IP = ipaddress.IPv4Address(address)
        else:
            if "%" in address:  # a scope id is no part of an SPF address
                raise ValueError(address)
            ip = ipaddress.IPv6Address(address)
    except ValueError:
        raise PermError(f"bad address in {_printable(term)}") from None
    bits = _cidr(length, ip.max_prefixlen, term) if slash else ip.max_prefixlen
    return ipaddress.ip_network((ip, bits), strict=False)


def parse_macro_string(text: str, exp: bool, what: str = "") -> MacroString:
    """The literals and macros of a macro-string (§7.1), or of an explanation string when `exp`
    (spaces allowed; the letters c, r and t too). PermError at the first thing the ABNF refuses."""
    out: list[str | Macro] = []
    literal: list[str] = []
    i, n = 0, len(text)
    letters = EXP_LETTERS if exp else LETTERS
    while i < n:
        c = text[i]
        if c != "%":
            if not ("!" <= c <= "~" or exp and c == " "):
                raise PermError(f"bad character in {_printable(what or text)}")
            literal.append(c)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < n else ""
        if literal:
            out.append("".join(literal))
            literal = []
        if nxt in ("%", "_", "-"):
            out.append(Macro(nxt))
            i += 2
            continue
        close = text.find("}", i + 2) if nxt == "{" else -1
        if close < 0:
            raise PermError(f"bad macro in {_printable(what or text)}")
        out.append(_macro(text[i + 2 : close], letters, what or text))
        i = close + 1
    if literal:
        out.append("".join(literal))
    return tuple(out)


def _macro(body: str, letters: frozenset[str], what: str) -> Macro:
    """letter *DIGIT [ "r" ] *delimiter, between the braces."""
    if not body or body[0].lower() not in letters:
        raise PermError(f"bad macro letter in {_printable(what)}")
    i = 1
    while i < len(body) and body[i].isdigit() and body[i].isascii():
        i += 1
    digits = body[1:i].lstrip("0")
    if i > 1 and not digits:
        raise PermError(f"macro keeps 0 parts in {_printable(what)}")  # §7.3: the DIGIT must be nonzero
    keep = 0 if not digits else int(digits) if len(digits) <= 3 else 999  # 999: more parts than any name has
    reverse = i < len(body) and body[i] in "rR"
    delimiters = body[i + reverse :]
    if any(c not in DELIMITERS for c in delimiters):
        raise PermError(f"bad macro delimiter in {_printable(what)}")
    return Macro(body[0].lower(), keep, reverse, delimiters or ".", body[0].isupper())


def _domain_spec(spec: MacroString, term: str) -> MacroString:
    """`spec` if it ends as a domain-spec must (§7.1 domain-end): "." toplabel ["."], or a macro."""
    if not spec:
        raise PermError(f"bad {_printable(term)}: a domain is required")
    if isinstance(spec[-1], Macro):
        return spec
    last = spec[-1][:-1] if spec[-1].endswith(".") else spec[-1]
    dot = last.rfind(".")
    if dot < 0 or not _toplabel(last[dot + 1 :]):
        raise PermError(f"bad domain in {_printable(term)}")
    return spec


def _toplabel(label: str) -> bool:
    """alphanumerics and inner hyphens, not all digits (§7.1 toplabel)."""
    if not label or not label.isascii() or not all(c.isalnum() or c == "-" for c in label):
        return False
    return label[0] != "-" and label[-1] != "-" and ("-" in label or not label.isdigit())


def _printable(text: str, most: int = 80) -> str:
    """`text` as a reason may hold it, fit for a header comment: printable ASCII, brackets for
    parentheses, "/" for a backslash, other characters "?"; at most `most` characters."""
    if len(text) <= most and text.isascii() and text.isprintable() and not any(c in text for c in SAFE):
        return text  # the usual case, without a look at each character
    out = "".join(SAFE.get(c, c) if " " <= c <= "~" else "?" for c in text[:most])
    return out + ("..." if len(text) > most else "")


# --- evaluation -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    result: SpfResult
    reason: str
    explanation: str = ""
    matched: str = ""  # what matched, "ip4:192.0.2.0/24 in example.com", for an include's reason


@dataclass
class Evaluation:
    """One check_host evaluation with its counters: terms and void lookups are counted across every
    include and redirect it follows (§4.6.4)."""

    dns: DnsLookup
    ip: IP
    local: str
    sender_domain: str
    helo: str
    receiver: str
    now: float
    terms: int = 0
    voids: int = 0
    includes: int = 0  # depth of includes now being evaluated: their exp= is never used (§6.2)
    chain: list[str] = field(default_factory=list)  # the domains being evaluated, outermost first
    _ptr: tuple[list[str], bool] | None = None  # the validated names of ip, and whether PTR was void

    @property
    def v4(self) -> bool:
        return self.ip.version == 4

    async def check_host(self, domain: str) -> Outcome:
        """§4: raises PermError or TempError; an include turns the results it cannot use into these."""
        txt = await self._record(domain)
        if txt is None:
            return Outcome("none", f"{domain}: no SPF record")
        try:
            record = parse_record(txt)
        except PermError as exc:
            raise PermError(f"{domain}: {exc}") from None
        self.chain.append(domain)
        try:
            return await self._evaluate(record, domain)
        finally:
            self.chain.pop()

    async def _record(self, domain: str) -> str | None:
        answer = await self.dns.query(domain, "TXT")
        if answer.status == "temp_fail":
            raise TempError(f"{domain}: DNS: {answer.error or 'temporary failure'}")
        found = [t for t in answer.records if is_spf(t)] if answer.status == "ok" else []
        if len(found) > 1:
            raise PermError(f"{domain}: {len(found)} SPF records")  # §4.5
        return found[0] if found else None

    async def _evaluate(self, record: Record, domain: str) -> Outcome:
        for m in record.mechanisms:
            if m.kind in DNS_TERMS:
                self._count(m.text, domain)
            matched, via = await self._match(m, domain)
            if matched:
                result = QUALIFIERS[m.qualifier]
                where = f"{m.text} in {domain}" if not via else f"{via}, by {m.text} in {domain}"
                outcome = Outcome(result, f"{self.chain[0]}: {self.ip} matched {where}", matched=where)
                if result == "fail" and record.exp is not None and not self.includes:
                    outcome.explanation = await self._explain(record.exp, domain)
                return outcome
        if record.redirect is not None and not any(m.kind == "all" for m in record.mechanisms):  # §5.1
            self._count("redirect", domain)
            target = await self._target(record.redirect, domain)
            outcome = await self.check_host(target) if target else Outcome("none", "")
            if outcome.result == "none":
                raise PermError(f"{domain}: redirect={target or '?'} has no SPF record")  # §6.1
            return outcome
        return Outcome("neutral", f"{self.chain[0]}: no mechanism matched {self.ip}")  # §4.7

    def _count(self, term: str, domain: str) -> None:
        self.terms += 1
        if self.terms > MAX_DNS_TERMS:
            loop = _loop(self.chain)
            why = f", an include/redirect loop: {loop}" if loop else ""
            raise PermError(f"more than {MAX_DNS_TERMS} DNS-querying terms, at {term} in {domain}{why}")

    def _void(self, term: str, domain: str) -> None:
        self.voids += 1
        if self.voids > MAX_VOID_LOOKUPS:
            raise PermError(f"more than {MAX_VOID_LOOKUPS} void lookups, at {term} in {domain}")

    async def _query(self, name: str, rdtype, term: str, domain: str) -> list[str]:
        """The records; [] when there are none; TempError for a DNS failure (§5)."""
        answer = await self.dns.query(name, rdtype)
        if answer.status == "temp_fail":
            raise TempError(f"{domain}: {term}: DNS: {answer.error or 'temporary failure'}")
        return answer.records if answer.status == "ok" else []

    async def _match(self, m: Mechanism, domain: str) -> tuple[bool, str]:
        """(matched, for an include that matched: what matched inside it)."""
        match m.kind:
            case "all":
                return True, ""
            case "ip4" | "ip6":
                return self.ip in m.network if m.network.version == self.ip.version else False, ""  # type: ignore[operator]
            case "include":
                target = await self._target(m.domain, domain)
                self.includes += 1
                try:
                    inner = await self.check_host(target) if target else Outcome("none", "")
                finally:
                    self.includes -= 1
                if inner.result == "none":
                    raise PermError(f"{domain}: {m.text}: no SPF record there")  # §5.2
                return inner.result == "pass", inner.matched
            case "a":
                name = await self._target(m.domain, domain)
                records = await self._query(name, "A" if self.v4 else "AAAA", m.text, domain) if name else []
                if not records:
                    self._void(m.text, domain)
                return self._in(records, m), ""
            case "mx":
                return await self._mx(m, domain), ""
            case "ptr":
                target = await self._target(m.domain, domain)
                names, void = await self._validated()
                if void:
                    self._void(m.text, domain)
                return any(n == target or n.endswith("." + target) for n in names) if target else False, ""
            case _:  # exists: an A question whatever the client's address (§5.7)
                name = await self._target(m.domain, domain)
                found = await self._query(name, "A", m.text, domain) if name else []
                if not found:
                    self._void(m.text, domain)
                return bool(found), ""

    def _in(self, addresses: list[str], m: Mechanism) -> bool:
        bits = m.cidr4 if self.v4 else m.cidr6
        shift = self.ip.max_prefixlen - bits
        mine = int(self.ip) >> shift
        for text in addresses:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                continue
            if address.version == self.ip.version and int(address) >> shift == mine:
                return True
        return False

    async def _mx(self, m: Mechanism, domain: str) -> bool:
        name = await self._target(m.domain, domain)
        records = await self._query(name, "MX", m.text, domain) if name else []
        if not records:
            self._void(m.text, domain)
            return False
        hosts = [r.partition(" ")[2] for r in records]
        hosts = [h for h in hosts if h and h != "."]  # a null MX (RFC 7505) names no host
        if len(hosts) > MAX_NAMES:
            raise PermError(f"{domain}: {m.text}: {len(hosts)} MX names, more than {MAX_NAMES}")  # §4.6.4
        rdtype = "A" if self.v4 else "AAAA"
        answers = await together(*(self.dns.query(h, rdtype) for h in hosts))
        for host, answer in zip(hosts, answers, strict=True):  # in order, as if asked one after another
            if answer.status == "temp_fail":
                raise TempError(f"{domain}: {m.text}: DNS: {answer.error or host}")
            if self._in(answer.records, m):
                return True
        return False

    async def _validated(self) -> tuple[list[str], bool]:
        """§5.5: the names of ip's PTR records (the first 10) whose addresses include ip; once per check
        (the ptr mechanism and the p macro share it). A DNS failure here is no match, never an error."""
        if self._ptr is None:
            answer = await self.dns.query(self.ip.reverse_pointer, "PTR")
            names = list(dict.fromkeys(answer.records))[:MAX_NAMES] if answer.status == "ok" else []
            rdtype = "A" if self.v4 else "AAAA"
            found = await together(*(self.dns.query(n, rdtype) for n in names))
            valid = [n for n, a in zip(names, found, strict=True) if str(self.ip) in _addresses(a.records, self.ip.version)]
            self._ptr = valid, answer.status in ("nxdomain", "nodata")
        return self._ptr

    async def _target(self, spec: MacroString, domain: str) -> str:
        """A domain-spec expanded (the current domain if none), its left labels dropped until it has at
        most 253 characters (§7.3), as the resolver asks it; "" when DNS cannot hold it (then nothing is
        asked: no match). Only the right end survives the cut, so only it is expanded."""
        if not spec:
            return domain
        name = await self._expand(spec, domain, most=255, right=True)
        name = name[:-1] if name.endswith(".") else name
        if len(name) > 253:
            cut = name.find(".", len(name) - 254)  # the first dot whose right side fits
            name = name[cut + 1 :] if cut >= 0 else name
        try:
            return query_name(name)
        except ValueError:
            return ""

    async def _expand(self, spec: MacroString, domain: str, most: int = 0, right: bool = False) -> str:
        """The macro-string with its macros replaced (§7.3). With `most`, expansion stops once that many
        characters are had, counted from the left, or from the right with `right`: a record full of
        macros costs no more than the part of its expansion that is used."""
        out: list[str] = []
        had = 0
        for part in reversed(spec) if right else spec:
            text = part if isinstance(part, str) else await self._macro(part, domain)
            out.append(text)
            had += len(text)
            if most and had >= most:
                break
        return "".join(reversed(out) if right else out)

    async def _macro(self, macro: Macro, domain: str) -> str:
        if macro.letter in "%_-":
            return {"%": "%", "_": " ", "-": "%20"}[macro.letter]
        parts = _split(await self._value(macro.letter, domain), macro.delimiters)
        if macro.reverse:
            parts.reverse()
        if macro.keep:
            parts = parts[-macro.keep :]
        text = ".".join(parts)
        return urllib.parse.quote(text, safe="-._~") if macro.escape else text

    async def _value(self, letter: str, domain: str) -> str:
        match letter:
            case "s":
                return f"{self.local}@{self.sender_domain}"
            case "l":
                return self.local
            case "o":
                return self.sender_domain
            case "d":
                return domain
            case "i":
                return str(self.ip) if self.v4 else ".".join(self.ip.packed.hex())  # 32 nibbles, dotted
            case "v":
                return "in-addr" if self.v4 else "ip6"
            case "h":
                return self.helo
            case "p":
                names, _ = await self._validated()
                for n in names:  # §5.5: the domain itself, else a subdomain of it, else any
                    if n == domain:
                        return n
                return next((n for n in names if n.endswith("." + domain)), names[0] if names else "unknown")
            case "c":
                return str(self.ip)
            case "r":
                return self.receiver or "unknown"
            case _:  # t
                return str(int(self.now))

    async def _explain(self, spec: MacroString, domain: str) -> str:
        """§6.2: the exp= TXT record, macro-expanded; "" for any trouble (then there is none)."""
        try:
            name = await self._target(spec, domain)
            answer = await self.dns.query(name, "TXT") if name else None
            if answer is None or answer.status != "ok" or len(answer.records) != 1:
                return ""
            text = await self._expand(parse_macro_string(answer.records[0], exp=True), domain, most=4 * MAX_EXPLANATION)
        except PermError:
            return ""
        clean = "".join(c for c in text if " " <= c <= "~")
        return clean[:MAX_EXPLANATION]


def _split(value: str, delimiters: str) -> list[str]:
    """`value` cut at each of `delimiters` (§7.3), in one pass."""
    parts, start = [], 0
    for i, c in enumerate(value):
        if c in delimiters:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


def _addresses(records: list[str], version: int) -> set[str]:
    """The addresses of an A/AAAA answer in `str(ipaddress)` form."""
    out = set()
    for text in records:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if address.version == version:
            out.add(str(address))
    return out


def _loop(chain: list[str]) -> str:
    """"a.test -> b.test -> a.test" for the first domain the chain meets again, else ""."""
    seen: dict[str, int] = {}
    for i, d in enumerate(chain):
        if d in seen:
            return " -> ".join(chain[seen[d] : i + 1])
        seen[d] = i
    return ""


def _client_ip(ip: str | IP) -> IP:
    """The client's address; an IPv4-mapped IPv6 address (::ffff:192.0.2.1) is the IPv4 one (§5)."""
    address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


async def check_host(
    dns: DnsLookup,
    ip: str | IP,
    domain: str,
    sender: str,
    helo: str = "",
    receiver: str = "",
    *,
    now: float,
    identity: Literal["mailfrom", "helo"] = "mailfrom",
) -> Spf:
    """RFC 7208 §4: the SPF result for `ip` sending as `sender` (local@domain; a missing local part is
    "postmaster") for `domain`, `helo` the HELO name, `receiver` our host name (%{r}), `now` the time
    (%{t}, Unix seconds). ValueError only for an `ip` that is not an address (the caller's fault)."""
    address = _client_ip(ip)
    local, at, sender_domain = sender.rpartition("@")
    if not at:
        local, sender_domain = "", sender
    try:
        name = query_name(domain)
    except ValueError:
        name = ""
    if "." not in name or not _toplabel(name.rsplit(".", 1)[1]):  # §4.3: malformed, one label, an address
        return Spf("none", identity, domain[:255], _printable(f"{domain[:80]}: not a domain name with an SPF record", MAX_REASON))
    state = Evaluation(dns, address, local or "postmaster", sender_domain, helo, receiver, now)
    try:
        outcome = await state.check_host(name)
    except PermError as exc:
        outcome = Outcome("permerror", str(exc))
    except TempError as exc:
        outcome = Outcome("temperror", str(exc))
    return Spf(outcome.result, identity, name, _printable(outcome.reason, MAX_REASON), outcome.explanation)


async def check(
    dns: DnsLookup, ip: str | IP, mail_from: str, helo: str, receiver: str = "", *, now: float
) -> tuple[Spf, Spf]:
    """(HELO result, MAIL FROM result), asked together. The null reverse-path ("") is checked as
    postmaster@HELO (§2.4), which is the HELO check itself: asked once. A HELO that is an address
    literal or not a domain name gives "none" for it (§2.3)."""
    helo_name = helo.strip()
    ask_helo = check_host(dns, ip, helo_name, f"postmaster@{helo_name}", helo_name, receiver, now=now, identity="helo")
    if not mail_from:
        result = await ask_helo
        return result, Spf(result.result, "mailfrom", result.domain, result.reason, result.explanation)
    domain = mail_from.rpartition("@")[2]
    ask_mail_from = check_host(dns, ip, domain, mail_from, helo_name, receiver, now=now, identity="mailfrom")
    helo_result, mail_from_result = await asyncio.gather(ask_helo, ask_mail_from)
    return helo_result, mail_from_result
