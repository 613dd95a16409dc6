"""MX lookup with RFC 5321 §5.1 semantics, RFC 7505 null MX, and a TTL cache with negative caching.

Outcomes (MxReply.status):
  ok            hosts sorted by preference, equal preferences shuffled, each with its A/AAAA addresses
  nxdomain      the domain does not exist                          -> permanent (bounce)
  null_mx       "MX 0 ." : the domain accepts no mail (RFC 7505)   -> permanent
  no_mail_host  no MX and no A/AAAA, or no MX host has an address  -> permanent
  temp_fail     SERVFAIL, timeout, no nameserver answered          -> temporary (retry); never cached
Permanent and positive answers are cached for their TTL (capped); a temp_fail never is.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from mailflow.cache import Cache, SingleFlight
from mailflow.contracts.messages import MxHost, MxReply
from mailflow_resolver import metrics


class TempFail(Exception):
    pass


class NoSuchName(Exception):
    def __init__(self, ttl: int):
        self.ttl = ttl


def make_dns_resolver(nameservers: str, timeout: float, lifetime: float) -> dns.asyncresolver.Resolver:
    """A dnspython resolver for "host[:port],..." or, if empty, the system configuration."""
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
    r.cache = None  # our own cache below knows about negative answers and the MX semantics
    return r


def normalize(domain: str) -> str:
    """Lower-case, no trailing dot, IDNA (A-label) form. ValueError if it cannot be a domain."""
    d = domain.strip().rstrip(".").lower()
    if not d or len(d) > 253 or any(c in d for c in " @[]\\\"/") or ".." in d:
        raise ValueError(f"not a domain: {domain!r}")
    try:
        d = dns.name.from_unicode(d).to_text(omit_final_dot=True)
    except Exception as exc:
        raise ValueError(f"not a domain: {domain!r}") from exc
    return d


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
            metrics.CACHE.labels("hit").inc()
            reply, expires = hit
            return _reshuffle(reply.model_copy(update={"ttl": int(expires - self.clock()), "cached": True}))
        metrics.CACHE.labels("miss").inc()
        # One query in flight per domain: concurrent deliveries to the same domain share it.
        return await self._flights.run(name, lambda: self._fetch(name))

    async def _fetch(self, name: str) -> MxReply:
        with metrics.LOOKUP_SECONDS.time():
            reply = await self._lookup(name)
        metrics.LOOKUPS.labels(reply.status).inc()
        if reply.status != "temp_fail":
            ttl = min(reply.ttl, self.max_ttl if reply.status == "ok" else self.negative_ttl)
            self.cache.put(name, (reply, self.clock() + ttl), ttl)
        return reply

    async def _query(self, name: str, rdtype: str) -> tuple[list, int]:
        """(records, ttl); ([], negative ttl) when the name exists without such records."""
        try:
            answer = await self.dns.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            raise NoSuchName(_negative_ttl(exc.response(exc.qnames()[0]) if exc.qnames() else None)) from exc
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout) as exc:
            raise TempFail(f"{rdtype} {name}: {type(exc).__name__}") from exc
        except dns.exception.DNSException as exc:
            raise TempFail(f"{rdtype} {name}: {exc}") from exc
        if answer.rrset is None:
            return [], _negative_ttl(answer.response)
        return list(answer.rrset), answer.rrset.ttl

    async def _addresses(self, host: str) -> tuple[list[str], int]:
        kinds = ["A", "AAAA"] if self.ipv6 else ["A"]
        results = await asyncio.gather(*(self._query(host, k) for k in kinds), return_exceptions=True)
        addrs: list[str] = []
        ttls = []
        temp = None
        for r in results:
            if isinstance(r, TempFail):
                temp = r
            elif isinstance(r, NoSuchName):
                ttls.append(r.ttl)
            elif isinstance(r, BaseException):
                raise r
            else:
                records, ttl = r
                addrs += [rr.address for rr in records]
                ttls.append(ttl)
        if not addrs and temp is not None:
            raise temp
        return addrs, min(ttls) if ttls else 0

    async def _lookup(self, name: str) -> MxReply:
        try:
            records, ttl = await self._query(name, "MX")
        except NoSuchName as exc:
            return MxReply(domain=name, status="nxdomain", error="domain does not exist", ttl=exc.ttl)
        except TempFail as exc:
            return MxReply(domain=name, status="temp_fail", error=str(exc))
        if not records:  # RFC 5321 §5.1: no MX -> the domain itself is the mail host
            try:
                addrs, attl = await self._addresses(name)
            except TempFail as exc:
                return MxReply(domain=name, status="temp_fail", error=str(exc))
            except NoSuchName as exc:
                return MxReply(domain=name, status="nxdomain", error="domain does not exist", ttl=exc.ttl)
            if not addrs:
                return MxReply(domain=name, status="no_mail_host", error="no MX and no address", ttl=min(ttl, attl))
            hosts = [MxHost(preference=0, host=name, addresses=addrs)]
            return MxReply(domain=name, status="ok", hosts=hosts, implicit=True, ttl=attl)
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
                hosts.append(MxHost(preference=pref, host=host, addresses=res[0]))
                ttls.append(res[1])
        if not any(h.addresses for h in hosts):
            if temp is not None:
                return MxReply(domain=name, status="temp_fail", error=str(temp))
            return MxReply(domain=name, status="no_mail_host", error="no MX host has an address", ttl=ttl)
        reply = MxReply(domain=name, status="ok", hosts=hosts, ttl=min(ttls))
        return _reshuffle(reply)


def _reshuffle(reply: MxReply) -> MxReply:
    """Sort by preference; shuffle hosts of equal preference (RFC 5321 §5.1), anew for every answer."""
    if len(reply.hosts) < 2:
        return reply
    keyed = [(h.preference, random.random(), h) for h in reply.hosts]
    keyed.sort(key=lambda t: (t[0], t[1]))
    return reply.model_copy(update={"hosts": [h for _, _, h in keyed]})


def _negative_ttl(response) -> int:
    """RFC 2308: the SOA in the authority section bounds how long a negative answer may be cached."""
    if response is None:
        return 60
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return min(rrset.ttl, rrset[0].minimum)
    return 60
