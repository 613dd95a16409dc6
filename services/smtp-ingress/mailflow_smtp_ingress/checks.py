"""Inbound mail authentication (issue 14): SPF, DKIM, ARC and DMARC of a message that came in on the
MX listener from a client that has not authenticated, one Authentication-Results header (RFC 8601),
and what becomes of the message. `decide` is the one place where results become a reply.

    checks = Checks.over(settings, dns)          # app.py, once; None when every check is off
    verdict = await checks.run(ip, helo, mail_from, message)
    verdict.reply     None: take the message; else refuse it with this reply at the end of DATA
    verdict.junk      DMARC p=quarantine failed: into each local recipient's \\Junk mailbox
    verdict.header    our Authentication-Results field, to go under our Received: line
    verdict.message   the message without the incoming Authentication-Results fields in our name

Each check is `enforce` (its verdict can refuse the message), `report` (its result only goes into
the header) or `off` (not run). DMARC takes the results of SPF and DKIM that ran (with SPF off it can
pass through DKIM only; settings.py refuses DMARC with both off), and its `enforce` gives: p=reject ->
550 5.7.1; p=quarantine -> junk; p=none -> delivered. SPF enforce: a fail (HELO or MAIL FROM) -> 550 5.7.23; DKIM enforce: signatures, none passes, one
fails -> 550 5.7.20; ARC enforce: a failed chain -> 550 5.7.29.

Failure rules: a check that could not be done (temperror: DNS) refuses nothing permanently: where
its verdict counts (enforce) the message gets 451 4.7.x and the sender tries again; where it does
not, it is reported. All checks of a message share one deadline (`check_timeout`): a check still
running then is cancelled and counts as a temperror. A check that raises (a bug) counts as a
temperror too, logged with a ref. A permanent refusal (5xx) of one enforced check wins over a
temporary one (4xx) of another; DMARC's comes first. The checks never see client text beyond the
domains they report; what goes into the header is quoted there (mailflow.authn.results).

Why SPF does not start at MAIL FROM, to overlap with DATA: a client could then make us ask DNS (up to
~20 questions per SPF check) for every MAIL/RSET it sends, without a recipient or a message, and the
lookups would outlive the transaction; started at the end of DATA they cost only mail a client really
sent to a local recipient. With the answers cached (DnsClient, the resolver) the overlap would save
nothing but the first lookup of a domain.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from prometheus_client import Counter

from mailflow import ids
from mailflow.authn import Arc, Dkim, Dmarc, DnsLookup, Spf, arc, dkim, dmarc, results, spf
from mailflow.cache import Cache
from mailflow_smtp_ingress import metrics
from mailflow_smtp_ingress import replies as R
from mailflow_smtp_ingress.settings import CheckMode, Settings

log = logging.getLogger(__name__)

Parsed = tuple[dkim.Fields, int] | None  # dkim.split(message): read once, for every check
SpfCheck = Callable[[str, str, str], Awaitable[Sequence[Spf]]]  # (client IP, MAIL FROM, HELO) -> both identities
DkimCheck = Callable[[bytes, Parsed], Awaitable[Sequence[Dkim]]]  # the message -> one result per signature
ArcCheck = Callable[[bytes, Parsed], Awaitable[Arc]]
TEMPORARY = "(DNS)"  # how an Arc "fail" says it is one DNS could not decide (RFC 8617 has no temperror)


@dataclass(frozen=True)
class Modes:
    spf: CheckMode = "report"
    dkim: CheckMode = "report"
    arc: CheckMode = "report"
    dmarc: CheckMode = "enforce"
    timeout: float = 20.0

    @classmethod
    def of(cls, s: Settings) -> Modes:
        return cls(s.check_spf, s.check_dkim, s.check_arc, s.check_dmarc, s.check_timeout)

    @property
    def any(self) -> bool:
        return (self.spf, self.dkim, self.arc, self.dmarc) != ("off",) * 4


@dataclass(frozen=True)
class Results:
    spf: tuple[Spf, ...] = ()  # empty: not run
    dkim: tuple[Dkim, ...] | None = None  # None: not run; empty: no signature
    arc: Arc | None = None
    dmarc: Dmarc | None = None


@dataclass(frozen=True)
class Verdict:
    results: Results
    reply: R.Reply | None = None  # None: take the message
    reason: str = ""  # why refused or junked, a metrics label: spf_fail, dmarc_reject, dmarc_quarantine...
    junk: bool = False
    header: bytes = b""
    message: bytes = b""


def decide(modes: Modes, r: Results) -> Verdict:
    """The one place results become what happens to the message (see the module's docstring)."""
    refuse: list[tuple[R.Reply, str]] = []  # permanent, in order of precedence
    defer: list[tuple[R.Reply, str]] = []
    d = r.dmarc
    if modes.dmarc == "enforce" and d is not None:
        if d.policy == "reject":
            shown = f" ({d.domain})" if d.domain else f": {d.reason}"
            refuse.append((R.R550_DMARC_REJECT.with_text(R.R550_DMARC_REJECT.text + shown), "dmarc_reject"))
        elif d.result == "temperror" and d.published != "none":
            defer.append((R.R451_DMARC_TEMP, "dmarc_temperror"))
    if modes.spf == "enforce":
        failed = next((s for s in r.spf if s.result == "fail"), None)
        if failed is not None:
            refuse.append((R.R550_SPF_FAIL.with_text(_spf_text(failed)), "spf_fail"))
        elif any(s.result == "temperror" for s in r.spf):
            defer.append((R.R451_SPF_TEMP, "spf_temperror"))
    if modes.dkim == "enforce" and r.dkim and not any(s.result == "pass" for s in r.dkim):
        if any(s.result == "temperror" for s in r.dkim):
            defer.append((R.R451_DKIM_TEMP, "dkim_temperror"))
        elif any(s.result == "fail" for s in r.dkim):
            refuse.append((R.R550_DKIM_FAIL, "dkim_fail"))
    if modes.arc == "enforce" and r.arc is not None and r.arc.result == "fail":
        if r.arc.reason.endswith(TEMPORARY):
            defer.append((R.R451_ARC_TEMP, "arc_temperror"))
        else:
            refuse.append((R.R550_ARC_FAIL, "arc_fail"))
    if refuse or defer:
        reply, reason = (refuse or defer)[0]
        return Verdict(r, reply, reason)
    if modes.dmarc == "enforce" and d is not None and d.policy == "quarantine":
        return Verdict(r, None, "dmarc_quarantine", junk=True)
    return Verdict(r)


def _spf_text(s: Spf) -> str:
    """The 550's text: the domain, and its own explanation (exp=, printable ASCII) if it gave one."""
    what = "HELO" if s.identity == "helo" else "MAIL FROM"
    text = f"SPF validation failed for {what} domain {s.domain[:255]}"
    return f"{text}: {s.explanation}" if s.explanation else text


class Checks:
    def __init__(
        self,
        modes: Modes,
        hostname: str,
        dns: DnsLookup,
        spf_check: SpfCheck,
        dkim_check: DkimCheck,
        arc_check: ArcCheck,
        rng: Callable[[], float] = random.random,
    ):
        self.modes, self.hostname, self.dns, self.rng = modes, hostname, dns, rng
        self.spf_check, self.dkim_check, self.arc_check = spf_check, dkim_check, arc_check

    @classmethod
    def over(cls, settings: Settings, dns: DnsLookup) -> Checks | None:
        """The checks of mailflow.authn over `dns`, as the settings say; None when all are off."""
        modes = Modes.of(settings)
        if not modes.any:
            return None
        if modes.dmarc != "off":
            dmarc.organizational_domain("example.com")  # loads the public suffix list now (~60 ms), not at a message
        hostname = settings.hostname

        verdicts: Cache[tuple[str, str, str], Sequence[Spf]] = Cache(settings.check_spf_cache_size)

        async def spf_check(ip: str, mail_from: str, helo: str) -> Sequence[Spf]:
            key = (ip, mail_from, helo)
            hit = verdicts.get(key)
            if hit is not None:
                return hit
            got = await spf.check(dns, ip, mail_from, helo, hostname, now=time.time())
            if all(s.result != "temperror" for s in got):
                verdicts.put(key, got, settings.check_spf_cache_s)
            return got

        async def dkim_check(message: bytes, parsed: Parsed) -> Sequence[Dkim]:
            return await dkim.verify(message, dns, int(time.time()), parsed=parsed)

        async def arc_check(message: bytes, parsed: Parsed) -> Arc:
            return await arc.verify_chain(message, dns, int(time.time()), parsed=parsed)

        return cls(modes, hostname, dns, spf_check, dkim_check, arc_check)

    async def run(self, ip: str, helo: str, mail_from: str, message: bytes) -> Verdict:
        started = time.perf_counter()
        m = self.modes
        parsed = dkim.split(message) if (m.dkim, m.arc, m.dmarc) != ("off",) * 3 else None
        jobs: dict[str, Callable[[], Awaitable[object]]] = {}
        if m.dkim != "off":
            jobs["dkim"] = lambda: self.dkim_check(message, parsed)
        if m.arc != "off":
            jobs["arc"] = lambda: self.arc_check(message, parsed)
        domains: list[str] | Dmarc | None = None
        if m.dmarc != "off":
            domains = _author_domains(parsed)
            if not isinstance(domains, Dmarc):
                jobs["dmarc"] = lambda: dmarc.lookup(self.dns, domains)
        if m.spf != "off":  # last: it may ask the most (up to ~20 questions), the others at most a few
            jobs["spf"] = lambda: self.spf_check(ip, mail_from, helo)
        got: dict[str, object] = {}
        # One check after the other, awaited, not as tasks: with the DNS answers cached (the usual case)
        # none of them suspends, so a message's checks take no turn of the event loop. As tasks, each
        # message waited two or three turns behind every other session's work: a median 10 ms for
        # 0.26 ms of CPU, and ingest over 20 connections fell to 61 % of the checks-off figure. A check
        # that must ask DNS now waits for its answers before the next one starts (a new sender's first
        # message waits for the sum of a few round trips to the resolver), all within the one deadline;
        # SPF, which may ask the most, goes last, so a slow SPF leaves the others their results.
        try:
            async with asyncio.timeout(m.timeout):
                for name, job in jobs.items():
                    try:
                        got[name] = await job()
                    except Exception as exc:  # a bug in a check: a temperror, logged with a ref
                        got[name] = _failed(name, exc, helo, mail_from)
        except TimeoutError:  # the deadline: the check under way was cancelled, the rest never ran
            pass
        for name in jobs:
            if name not in got:
                got[name] = _undone(name, "not done in time", helo, mail_from)
        spfs = tuple(got.get("spf", ()))
        dkims = None if "dkim" not in got else tuple(got["dkim"])
        found = got.get("dmarc", domains)
        if isinstance(found, list):
            found = dmarc.verdict(found, spfs, dkims or (), self.rng)
        verdict = decide(m, Results(spfs, dkims, got.get("arc"), found))
        r = verdict.results
        _count(r)
        metrics.AUTHN_SECONDS.observe(time.perf_counter() - started)
        header = results.header(self.hostname, r.spf, r.dkim, r.arc, r.dmarc)
        return replace(verdict, header=header, message=results.remove_ours(message, self.hostname))


def _author_domains(parsed: Parsed) -> list[str] | Dmarc:
    """The From domains (dmarc.author_domains); a header block too long to read is refused by a
    DMARC that enforces (a From could hide past what is read)."""
    if parsed is None:
        return Dmarc("permerror", policy="reject", reason=f"header block over {dkim.MAX_HEADER} octets")
    return dmarc.author_domains([v for n, v in parsed[0] if dkim.field_name(n) == b"from"])


def _undone(name: str, why: str, helo: str, mail_from: str) -> object:
    """What check `name` counts as when it did not finish in time or raised: a temperror."""
    if name == "spf":
        mail_from_domain = mail_from.rpartition("@")[2] or helo
        return (Spf("temperror", "helo", helo, why), Spf("temperror", "mailfrom", mail_from_domain, why))
    if name == "dkim":
        return (Dkim("temperror", reason=why),)
    if name == "arc":
        return Arc("fail", reason=f"{why} {TEMPORARY}")
    return Dmarc("temperror", reason=why)


def _failed(name: str, exc: Exception, helo: str, mail_from: str) -> object:
    ref = ids.ref()
    log.error("%s check failed", name, exc_info=exc, extra={"ref": ref})
    return _undone(name, f"internal error, ref {ref}", helo, mail_from)


def _count(r: Results) -> None:
    for s in r.spf:
        _result_counter(f"spf_{s.identity}", s.result).inc()
    for d in r.dkim or ():
        _result_counter("dkim", d.result).inc()
    if r.arc is not None:
        _result_counter("arc", r.arc.result).inc()
    if r.dmarc is not None:
        _result_counter("dmarc", r.dmarc.result).inc()


@functools.cache  # a few dozen (check, result) pairs; labels() costs ~8 us a call, five calls a message
def _result_counter(check: str, result: str) -> Counter:
    return metrics.AUTHN_RESULTS.labels(check, result)
