"""DNS for the other services: delivery's mail hosts (`MxResolver`, `dns.mx`) and the single questions of
mail authentication (`QueryResolver`, `dns.query`), each with a TTL cache and negative caching. `ask` is
the one place that asks dnspython and sorts its errors: records, "no such name" (`NoSuchName`, with the
SOA's negative TTL, RFC 2308) or a temporary failure (`TempFail`).

MX lookups have RFC 5321 §5.1 semantics and RFC 7505 null MX. Outcomes (MxReply.status):
  ok            hosts sorted by preference, equal preferences shuffled, each with its A/AAAA addresses
  nxdomain      the domain does not exist                          -> permanent (bounce)
  null_mx       "MX 0 ." : the domain accepts no mail (RFC 7505)   -> permanent
  no_mail_host  no MX and no A/AAAA, or no MX host has an address  -> permanent
  temp_fail     SERVFAIL, timeout, no nameserver answered          -> temporary (retry); never cached
Permanent and positive answers are cached for their TTL (capped); a temp_fail never is.

Single questions (DnsAnswer.status, records as text: see `DnsAnswer`):
  ok            the records (TXT, A, AAAA, MX, PTR, SRV, TLSA), CNAMEs followed  cached for their TTL (capped)
  nodata        the name exists without records of the type             cached for the SOA's negative TTL
  nxdomain      the name does not exist, or cannot be a DNS name        (capped); a bad name never asks
  temp_fail     SERVFAIL, timeout, an answer over `max_answer_records`   never cached
                or `max_answer_chars` (DNS caps a message at 64 KiB)

DNSSEC: this resolver does not validate; it passes on the validation of its upstream. With `dnssec`
(MAILFLOW_RESOLVER_DNSSEC_TRUST_AD) every query carries the AD and DO bits (RFC 6840 §5.7, RFC 3225),
and an answer whose response has the AD bit is `secure` (DnsAnswer.secure; MxReply.secure and
MxHost.secure for the mail hosts). The AD bit is only as trustworthy as the path to the upstream: turn
it on only for a validating resolver on loopback or a network no one else can write to (RFC 6698
§A.3, RFC 7672 §2.1.1). Off, nothing is ever `secure`, whatever the upstream says, and DANE never
applies. The flag is cached with the answer it belongs to.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from mailflow.cache import Cache, SingleFlight
from mailflow.contracts.messages import DnsAnswer, DnsType, MxHost, MxReply
from mailflow.dns import query_name
from mailflow_resolver import metrics

EDNS_PAYLOAD = 1232  # octets a UDP answer may have (DNS Flag Day 2020); a bigger one comes truncated, then by TCP


class TempFail(Exception):
    pass


class NoSuchName(Exception):
    def __init__(self, ttl: int, secure: bool = False):
        self.ttl, self.secure = ttl, secure


def make_dns_resolver(nameservers: str, timeout: float, lifetime: float, dnssec: bool = False) -> dns.asyncresolver.Resolver:
    """A dnspython resolver for "host[:port],..." or, if empty, the system configuration. `dnssec`: ask
    for the upstream's validation (AD and DO bits) and believe its AD bit (see the module's docstring)."""
    if not nameservers.strip():
        r = dns.asyncresolver.Resolver()
    else:
        r = dns.asyncresolver.Resolver(configure=False)
        servers = []
        for item in nameservers.split(","):
            item = item.strip()
            host, port = item, 53
            if item.startswith("["):  # [::1]:5353
                host, _, rest = item[1:].partition("]")
                port = int(rest.lstrip(":") or 53)
            elif item.count(":") == 1:
                host, p = item.split(":")
                port = int(p)
            servers.append(dns.nameserver.Do53Nameserver(host, port))
        r.nameservers = servers
    r.timeout = timeout
    r.lifetime = lifetime
    # SPF and DKIM TXT answers are often over the 512 octets of plain DNS
    r.use_edns(0, dns.flags.DO if dnssec else 0, EDNS_PAYLOAD)
    if dnssec:  # AD in a query asks for AD in the answer (RFC 6840 §5.7); DO for resolvers that want it
        r.set_flags(dns.flags.RD | dns.flags.AD)
    r.cache = None  # our own caches below know about negative answers and the MX semantics
    return r


def normalize(domain: str) -> str:
    """A mail domain: lower-case, no trailing dot, IDNA (A-label) form. ValueError if it cannot be one."""
    d = domain.strip().rstrip(".")
    if any(c in d for c in " @[]\\\"/"):
        raise ValueError(f"not a domain: {domain!r}")
    try:
        return query_name(d)
    except ValueError as exc:
        raise ValueError(f"not a domain: {domain!r}") from exc


def _negative_ttl(response) -> int:
    """RFC 2308: the SOA in the authority section bounds how long a negative answer may be cached."""
    if response is None:
        return 60
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return min(rrset.ttl, rrset[0].minimum)
    return 60


def _secure(resolver: dns.asyncresolver.Resolver, response) -> bool:
    """The response was authenticated by a validating upstream that we were told to trust: the AD bit
    counts only when we asked for it (`make_dns_resolver(dnssec=True)`)."""
    asked = resolver.flags is not None and bool(resolver.flags & dns.flags.AD)
    return asked and response is not None and bool(response.flags & dns.flags.AD)


async def ask(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> tuple[list, int, bool]:
    """(records, ttl, secure) of `name` (a `query_name`); ([], the negative ttl, secure) when the name
    exists without such records. NoSuchName (with the negative ttl and `secure`) when it does not exist;
    TempFail for the rest: SERVFAIL (which is also what a validating upstream answers for data that fails
    validation), REFUSED, a timeout, no nameserver that answered, a malformed answer."""
    qname = dns.name.Name([label.encode() for label in name.split(".")] + [b""])
    try:
        answer = await resolver.resolve(qname, rdtype, search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN as exc:
        response = exc.response(exc.qnames()[0]) if exc.qnames() else None
        raise NoSuchName(_negative_ttl(response), _secure(resolver, response)) from exc
    except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout) as exc:
        raise TempFail(f"{rdtype} {name}: {type(exc).__name__}") from exc
    except dns.exception.DNSException as exc:
        raise TempFail(f"{rdtype} {name}: {exc}") from exc
    secure = _secure(resolver, answer.response)
    if answer.rrset is None:
        return [], _negative_ttl(answer.response), secure
    return list(answer.rrset), answer.rrset.ttl, secure


class MxResolver:
    def __init__(
        self,
        dns_resolver: dns.asyncresolver.Resolver,
        cache_size: int = 20_000,
        max_ttl: int = 86_400,
        negative_ttl: int = 300,
        ipv6: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.dns = dns_resolver
        self.cache: Cache[str, tuple[MxReply, float]] = Cache(cache_size, clock)  # name -> (reply, expires)
        self.max_ttl, self.negative_ttl, self.ipv6 = max_ttl, negative_ttl, ipv6
        self.clock = clock
        self._flights: SingleFlight[str, MxReply] = SingleFlight()

    async def lookup(self, domain: str) -> MxReply:
        try:
            name = normalize(domain)
        except ValueError as exc:
            return MxReply(domain=domain, status="nxdomain", error=str(exc))
        hit = self.cache.get(name)
        if hit is not None:
            metrics.CACHE.labels("mail-hosts", "hit").inc()
            reply, expires = hit
            return _reshuffle(reply.model_copy(update={"ttl": int(expires - self.clock()), "cached": True}))
        metrics.CACHE.labels("mail-hosts", "miss").inc()
        # One query in flight per domain: concurrent deliveries to the same domain share it.
        return await self._flights.run(name, lambda: self._fetch(name))

    async def _fetch(self, name: str) -> MxReply:
        with metrics.LOOKUP_SECONDS.time():
            reply = await self._lookup(name)
        metrics.LOOKUPS.labels("mail-hosts", reply.status).inc()
        if reply.status != "temp_fail":
            ttl = min(reply.ttl, self.max_ttl if reply.status == "ok" else self.negative_ttl)
            self.cache.put(name, (reply, self.clock() + ttl), ttl)
        return reply

    async def _addresses(self, host: str) -> tuple[list[str], int, bool]:
        """(addresses, ttl, secure): secure when every answer that was had (A, AAAA, positive or not)
        was authenticated; one that failed gives no addresses and is left out."""
        kinds = ["A", "AAAA"] if self.ipv6 else ["A"]
        results = await asyncio.gather(*(ask(self.dns, host, k) for k in kinds), return_exceptions=True)
        addrs: list[str] = []
        ttls = []
        temp = None
        secure = True
        for r in results:
            if isinstance(r, TempFail):
                temp = r
            elif isinstance(r, NoSuchName):
                ttls.append(r.ttl)
                secure = secure and r.secure
            elif isinstance(r, BaseException):
                raise r
            else:
                records, ttl, authenticated = r
                addrs += [rr.address for rr in records]
                ttls.append(ttl)
                secure = secure and authenticated
        if not addrs and temp is not None:
            raise temp
        return addrs, min(ttls) if ttls else 0, secure and bool(ttls)

    async def _lookup(self, name: str) -> MxReply:
        try:
            records, ttl, secure = await ask(self.dns, name, "MX")
        except NoSuchName as exc:
            return MxReply(domain=name, status="nxdomain", error="domain does not exist", ttl=exc.ttl)
        except TempFail as exc:
            return MxReply(domain=name, status="temp_fail", error=str(exc))
        if not records:  # RFC 5321 §5.1: no MX -> the domain itself is the mail host
            try:
                addrs, attl, asecure = await self._addresses(name)
            except TempFail as exc:
                return MxReply(domain=name, status="temp_fail", error=str(exc))
            except NoSuchName as exc:
                return MxReply(domain=name, status="nxdomain", error="domain does not exist", ttl=exc.ttl)
            if not addrs:
                return MxReply(domain=name, status="no_mail_host", error="no MX and no address", ttl=min(ttl, attl))
            secure = secure and asecure
            hosts = [MxHost(preference=0, host=name, addresses=addrs, secure=secure)]
            return MxReply(domain=name, status="ok", hosts=hosts, implicit=True, ttl=attl, secure=secure)
        # RFC 7505: a null MX ("0 .") means the domain takes no mail at all.
        if any(rr.exchange == dns.name.root for rr in records):
            return MxReply(domain=name, status="null_mx", error="domain accepts no mail (null MX)", ttl=ttl)
        by_host: dict[str, int] = {}
        for rr in records:
            host = rr.exchange.to_text(omit_final_dot=True).lower()
            by_host[host] = min(rr.preference, by_host.get(host, rr.preference))
        found = await asyncio.gather(*(self._addresses(h) for h in by_host), return_exceptions=True)
        hosts, ttls, temp = [], [ttl], None
        for (host, pref), res in zip(by_host.items(), found, strict=True):
            if isinstance(res, TempFail):
                temp = res
                hosts.append(MxHost(preference=pref, host=host, addresses=[]))
            elif isinstance(res, NoSuchName):
                continue  # an MX that names no host: skip it
            elif isinstance(res, BaseException):
                raise res
            else:
                hosts.append(MxHost(preference=pref, host=host, addresses=res[0], secure=secure and res[2]))
                ttls.append(res[1])
        if not any(h.addresses for h in hosts):
            if temp is not None:
                return MxReply(domain=name, status="temp_fail", error=str(temp))
            return MxReply(domain=name, status="no_mail_host", error="no MX host has an address", ttl=ttl)
        reply = MxReply(domain=name, status="ok", hosts=hosts, ttl=min(ttls), secure=secure)
        return _reshuffle(reply)


def _reshuffle(reply: MxReply) -> MxReply:
    """Sort by preference; shuffle hosts of equal preference (RFC 5321 §5.1), anew for every answer."""
    if len(reply.hosts) < 2:
        return reply
    keyed = [(h.preference, random.random(), h) for h in reply.hosts]
    keyed.sort(key=lambda t: (t[0], t[1]))
    return reply.model_copy(update={"hosts": [h for _, _, h in keyed]})



def _text(rr, rdtype: str) -> str:
    """One record as `DnsAnswer.records` has it."""
    match rdtype:
        case "TXT":
            return b"".join(rr.strings).decode("utf-8", "replace")
        case "A" | "AAAA":
            return rr.address
        case "MX":
            return f"{rr.preference} {rr.exchange.to_text(omit_final_dot=True).lower()}"
        case "SRV":
            return f"{rr.priority} {rr.weight} {rr.port} {rr.target.to_text(omit_final_dot=True).lower()}"
        case "TLSA":  # RFC 6698 §2.2 presentation form, the data in lower-case hex
            return f"{rr.usage} {rr.selector} {rr.mtype} {rr.cert.hex()}"
        case _:  # PTR
            return rr.target.to_text(omit_final_dot=True).lower()


class QueryResolver:
    """`dns.query`: one name and type, its records as text (`mailflow.authn.DnsLookup`). The cache holds
    answers up to `cache_chars` characters of records in all (each answer costs its text plus 64), so
    its memory stays bounded whatever the answers' size."""

    def __init__(
        self,
        dns_resolver: dns.asyncresolver.Resolver,
        cache_chars: int = 32 * 1024 * 1024,
        max_ttl: int = 86_400,
        negative_ttl: int = 300,
        max_answer_records: int = 1_000,
        max_answer_chars: int = 65_535,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.dns = dns_resolver
        self.cache: Cache[tuple[str, str], tuple[DnsAnswer, float]] = Cache(cache_chars, clock)
        self.max_ttl, self.negative_ttl = max_ttl, negative_ttl
        self.max_answer_records, self.max_answer_chars = max_answer_records, max_answer_chars
        self.clock = clock
        self._flights: SingleFlight[tuple[str, str], DnsAnswer] = SingleFlight()

    async def query(self, name: str, rdtype: DnsType) -> DnsAnswer:
        try:
            qname = query_name(name)
        except ValueError as exc:  # DNS cannot hold it, so no such name exists; nothing is asked
            return DnsAnswer(name=name[:255], type=rdtype, status="nxdomain", error=str(exc))
        key = (qname, rdtype)
        hit = self.cache.get(key)
        if hit is not None:
            metrics.CACHE.labels(rdtype, "hit").inc()
            answer, expires = hit
            return answer.model_copy(update={"ttl": max(0, int(expires - self.clock())), "cached": True})
        metrics.CACHE.labels(rdtype, "miss").inc()
        return await self._flights.run(key, lambda: self._fetch(qname, rdtype))

    async def _fetch(self, name: str, rdtype: DnsType) -> DnsAnswer:
        with metrics.LOOKUP_SECONDS.time():
            answer = await self._ask(name, rdtype)
        metrics.LOOKUPS.labels(rdtype, answer.status).inc()
        if answer.status != "temp_fail":
            ttl = min(answer.ttl, self.max_ttl if answer.status == "ok" else self.negative_ttl)
            answer = answer.model_copy(update={"ttl": ttl})
            cost = 64 + sum(len(r) for r in answer.records)
            self.cache.put((name, rdtype), (answer, self.clock() + ttl), ttl, cost)
        return answer

    async def _ask(self, name: str, rdtype: DnsType) -> DnsAnswer:
        try:
            records, ttl, secure = await ask(self.dns, name, rdtype)
        except NoSuchName as exc:
            return DnsAnswer(name=name, type=rdtype, status="nxdomain", ttl=exc.ttl, secure=exc.secure)
        except TempFail as exc:
            return DnsAnswer(name=name, type=rdtype, status="temp_fail", error=str(exc))
        if not records:
            return DnsAnswer(name=name, type=rdtype, status="nodata", ttl=ttl, secure=secure)
        if len(records) > self.max_answer_records:
            return self._too_large(name, rdtype, f"{len(records)} records")
        texts = [_text(rr, rdtype) for rr in records]
        if (chars := sum(len(t) for t in texts)) > self.max_answer_chars:
            return self._too_large(name, rdtype, f"{chars} characters")
        return DnsAnswer(name=name, type=rdtype, status="ok", records=texts, ttl=ttl, secure=secure)

    def _too_large(self, name: str, rdtype: DnsType, size: str) -> DnsAnswer:
        limits = f"{self.max_answer_records} records, {self.max_answer_chars} characters"
        return DnsAnswer(name=name, type=rdtype, status="temp_fail", error=f"{rdtype} {name}: answer too large ({size}; limits {limits})")
