"""DMARC (RFC 7489): the RFC5322.From domain, its policy record, alignment with SPF and DKIM.

    check(dns, from_values, spfs, dkims)        -> Dmarc, the whole evaluation; or in two steps, so
    author_domains(from_values)                   the record lookup runs while SPF and DKIM do:
    await lookup(dns, domains)  ...  verdict(found, spfs, dkims)

Failure rules (never an exception for anything a message or DNS can hold):
  - a DNS answer that could not be had (temp_fail) is `temperror`, and so is a `fail` that a passing
    SPF or DKIM check might have turned into a pass had it not ended in temperror itself (one of an
    aligned domain: a signature of another domain that DNS could not check changes nothing): a DNS
    failure never leads to a rejection, the sender tries again (the caller answers 451 4.7.1);
  - no From field, or one without an address (an empty group), is `permerror` with policy none:
    no domain claims the message, so there is no policy to apply (§6.6.1, RFC 5322 §3.6 wants one);
  - several From fields or several addresses in one (§6.6.1: "MAY reject"; a known trick to show the
    reader one From and DMARC another): every distinct domain is evaluated and the strictest outcome
    counts; more than MAX_FROM_DOMAINS From fields or distinct domains is `permerror` with policy
    reject (the caller refuses it);
  - no DMARC record at the From domain nor at its organizational domain is `none`; two or more
    DMARC records at one name, or a record without a valid `p=` (and no valid `rua=`), is
    `permerror` with policy none (§6.6.3: "DMARC processing is not applied"); a record whose `p=` or
    `sp=` is invalid but that names a valid `rua=` counts as `p=none` (§6.6.3); other tags with a bad
    value take their default (§6.3).
Reports (`rua`, `ruf`, `fo`, `rf`, `ri`) are parsed and kept in `Record` but never sent: Mailflow
sends no aggregate or failure reports.

Organizational domains come from the Public Suffix List of the `publicsuffixlist` package (both its
ICANN and private sections, as RFC 7489 §3.2 uses the list), loaded once per process.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from publicsuffixlist import PublicSuffixList

from mailflow import mime
from mailflow.authn import Dkim, Dmarc, DmarcPolicy, DnsLookup, Spf, together
from mailflow.cache import memo

MAX_FROM_DOMAINS = 4  # distinct From domains evaluated; a message claiming more is refused
MAX_TAGS = 32  # tags read from one record (RFC 7489 defines 11); the rest is ignored
POLICIES: tuple[DmarcPolicy, ...] = ("none", "quarantine", "reject")

Alignment = Literal["r", "s"]


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix and one label more ("mail.example.co.uk" -> "example.co.uk");
    a public suffix itself, or a name the list cannot take, is its own organizational domain."""
    domain = domain.lower().rstrip(".")
    try:
        return _psl().privatesuffix(domain) or domain
    except Exception:  # the package raises for a malformed name (an empty label)
        return domain


def aligned(a: str, b: str, mode: Alignment) -> bool:
    """§3.1: strict is the same name; relaxed is the same organizational domain."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if a == b:
        return True
    return mode == "r" and organizational_domain(a) == organizational_domain(b)


# --- the RFC5322.From domain ----------------------------------------------------------------------


def author_domains(from_values: Sequence[bytes]) -> list[str] | Dmarc:
    """The distinct domains of the From fields' addresses (`from_values`: each From field's value,
    folding and all), lower case A-labels; or the result when there is none to evaluate (see above)."""
    if len(from_values) > MAX_FROM_DOMAINS:
        return Dmarc("permerror", policy="reject", reason=f"more than {MAX_FROM_DOMAINS} From fields")
    domains: list[str] = []
    for value in from_values:
        text = value.decode("utf-8", "replace").replace("\r", "").replace("\n", "")
        for a in mime.parse_addresses(text):
            if not a.mailbox or not a.host:
                continue  # a group's start or end
            domain = _a_label(a.host)
            if domain is None:
                return Dmarc("permerror", reason="From domain is not a domain name")
            if domain not in domains:
                domains.append(domain)
            if len(domains) > MAX_FROM_DOMAINS:
                return Dmarc("permerror", policy="reject", reason=f"more than {MAX_FROM_DOMAINS} From domains")
    if not domains:
        return Dmarc("permerror", reason="no From address" if from_values else "no From field")
    return domains


def _a_label(host: str) -> str | None:
    domain = host.strip().rstrip(".").lower()
    if not domain or domain.startswith("["):
        return None
    try:
        return domain if domain.isascii() else domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None


# --- the record (§6.3, §6.4) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """A DMARC record as found for `domain` (the From domain) at `_dmarc.<at>`."""

    domain: str
    at: str  # the From domain, or its organizational domain when the record was found there
    p: DmarcPolicy
    sp: DmarcPolicy  # p when not given
    adkim: Alignment = "r"
    aspf: Alignment = "r"
    pct: int = 100
    rua: tuple[str, ...] = ()  # parsed, never used: no reports are sent
    ruf: tuple[str, ...] = ()
    fo: str = "0"
    rf: str = "afrf"
    ri: int = 86400

    @property
    def policy(self) -> DmarcPolicy:
        """p=, or sp= for a subdomain whose record was found at its organizational domain."""
        return self.sp if self.at != self.domain else self.p


class Invalid(Exception):
    """A DMARC record (it starts with v=DMARC1) that cannot be used."""


def is_dmarc(text: str) -> bool:
    """§6.6.3 step 3: a record whose first tag is not v=DMARC1 is no DMARC record."""
    name, eq, value = text.partition(";")[0].partition("=")
    return bool(eq) and name.strip().lower() == "v" and value.strip() == "DMARC1"


@memo(1 << 20)  # a sender's record, parsed once (~15 us), not at each of its messages; 1 MiB of records
def parse_record(text: str, domain: str, at: str) -> Record:
    """The tags of a record `is_dmarc` accepted; Invalid when neither p= nor rua= is usable."""
    tags: dict[str, str] = {}
    for part in text.split(";", MAX_TAGS)[1:MAX_TAGS]:
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if eq and name and name not in tags:
            tags[name] = value.strip()
    rua = _uris(tags.get("rua", ""))
    p = tags.get("p", "").lower()
    sp = tags.get("sp", p).lower()
    if p not in POLICIES or sp not in POLICIES:
        if not rua:
            raise Invalid("no valid p=" if p not in POLICIES else "invalid sp=")
        p = sp = "none"
    return Record(
        domain=domain,
        at=at,
        p=p,  # type: ignore[arg-type]
        sp=sp,  # type: ignore[arg-type]
        adkim="s" if tags.get("adkim", "").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "").lower() == "s" else "r",
        pct=_number(tags.get("pct", ""), 100, 0, 100),
        rua=rua,
        ruf=_uris(tags.get("ruf", "")),
        fo=tags.get("fo") or "0",
        rf=tags.get("rf") or "afrf",
        ri=_number(tags.get("ri", ""), 86400, 0, 2**32 - 1),
    )


def _number(text: str, default: int, low: int, high: int) -> int:
    if not text.isdigit() or len(text) > 10:
        return default
    n = int(text)
    return n if low <= n <= high else default


def _uris(text: str) -> tuple[str, ...]:
    """§6.4 dmarc-uri: a URI (here: scheme ":" something) with an optional "!size"."""
    out = []
    for item in text.split(",")[:MAX_TAGS]:
        item = item.strip()
        scheme, colon, rest = item.partition(":")
        if colon and rest and scheme[:1].isalpha() and all(c.isalnum() or c in "+.-" for c in scheme):
            out.append(item)
    return tuple(out)


# --- discovery (§6.6.3) ---------------------------------------------------------------------------


async def _records(dns: DnsLookup, name: str) -> list[str] | None:
    """The DMARC records at `name` (None: DNS failed)."""
    answer = await dns.query(name, "TXT")
    if answer.status == "temp_fail":
        return None
    if answer.status != "ok":
        return []
    return [r for r in answer.records if is_dmarc(r)]


async def discover(dns: DnsLookup, domain: str) -> Record | Dmarc:
    """The record for From domain `domain`: at _dmarc.<domain>, else at _dmarc.<organizational
    domain>; or the result when there is none to use."""
    at = domain
    found = await _records(dns, f"_dmarc.{domain}")
    if found == []:
        org = organizational_domain(domain)
        if org != domain:
            at = org
            found = await _records(dns, f"_dmarc.{org}")
    if found is None:
        return Dmarc("temperror", domain, reason=f"DNS lookup of _dmarc.{at} failed")
    if not found:
        return Dmarc("none", domain, reason="no DMARC record")
    if len(found) > 1:
        return Dmarc("permerror", domain, reason=f"several DMARC records at _dmarc.{at}")
    try:
        return parse_record(found[0], domain, at)
    except Invalid as exc:
        return Dmarc("permerror", domain, reason=f"invalid DMARC record at _dmarc.{at}: {exc}")


async def lookup(dns: DnsLookup, domains: list[str]) -> list[Record | Dmarc]:
    return await together(*(discover(dns, d) for d in domains))


# --- evaluation (§6.6.2, §6.6.4) ------------------------------------------------------------------


def evaluate(found: Record | Dmarc, spfs: Sequence[Spf], dkims: Sequence[Dkim], rng: Callable[[], float]) -> Dmarc:
    """One From domain's result. `spfs`: the SPF checks done (DMARC uses the MAIL FROM identity's
    only, §3.1.2); `dkims`: every signature's. `rng()` in [0, 1) samples `pct`."""
    if isinstance(found, Dmarc):
        return found
    spf = next((s for s in spfs if s.identity == "mailfrom"), None)
    rec, published = found, found.policy
    if spf is not None and spf.result == "pass" and aligned(spf.domain, rec.domain, rec.aspf):
        return Dmarc("pass", rec.domain, "none", published, f"SPF aligned ({spf.domain})")
    for d in dkims:
        if d.result == "pass" and aligned(d.domain, rec.domain, rec.adkim):
            return Dmarc("pass", rec.domain, "none", published, f"DKIM aligned ({d.domain})")
    undecided = [(s.domain, rec.aspf) for s in (spf,) if s is not None and s.result == "temperror"]
    undecided += [(d.domain, rec.adkim) for d in dkims if d.result == "temperror"]
    # a check that could not be done matters if it could have aligned (one that timed out names no domain)
    if any(not domain or aligned(domain, rec.domain, mode) for domain, mode in undecided):
        return Dmarc("temperror", rec.domain, "none", published, "SPF or DKIM could not be checked")
    policy = published
    if rec.pct < 100 and rng() * 100 >= rec.pct:  # not sampled: the next policy down (§6.6.4)
        policy = POLICIES[max(0, POLICIES.index(published) - 1)]
    return Dmarc("fail", rec.domain, policy, published, "neither SPF nor DKIM aligned")


_RESULT_RANK = {"pass": 0, "none": 1, "permerror": 2, "temperror": 3, "fail": 4}


def _severity(d: Dmarc) -> tuple[int, int]:
    """How strict an outcome is: a temperror counts as its published policy (reject when unknown),
    since the evaluation might have ended there."""
    policy = (d.published or "reject") if d.result == "temperror" else d.policy
    return POLICIES.index(policy), _RESULT_RANK[d.result]


def verdict(
    found: list[Record | Dmarc],
    spfs: Sequence[Spf],
    dkims: Sequence[Dkim],
    rng: Callable[[], float] = random.random,
) -> Dmarc:
    """The message's result: its From domain's, or the strictest of several."""
    return max((evaluate(f, spfs, dkims, rng) for f in found), key=_severity)


async def check(
    dns: DnsLookup,
    from_values: Sequence[bytes],
    spfs: Sequence[Spf],
    dkims: Sequence[Dkim],
    rng: Callable[[], float] = random.random,
) -> Dmarc:
    domains = author_domains(from_values)
    if isinstance(domains, Dmarc):
        return domains
    return verdict(await lookup(dns, domains), spfs, dkims, rng)
