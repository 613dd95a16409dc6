"""Asking the resolver service over NATS: `await MxClient(nc).lookup("naver.test")` (delivery's mail
hosts) and `await DnsClient(nc).query("naver.test", "TXT")` (the questions of mail authentication).

No answer within the timeout (resolver down, NATS away, no responders) or a reply that does not parse is
a `temp_fail` answer, never an exception: the caller defers the message and tries again later.
`query_name` is the one rule of what a DNS name can be, for the resolver and for the checks that make
names (SPF macros).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import dns.name
from nats.aio.client import Client as NATS
from pydantic import BaseModel

from mailflow.cache import Cache, SingleFlight
from mailflow.contracts import subjects
from mailflow.contracts.messages import DnsAnswer, DnsQuery, DnsType, MxReply, MxRequest

R = TypeVar("R", bound=BaseModel)


class Resolver(Protocol):
    async def lookup(self, domain: str) -> MxReply: ...


def query_name(name: str) -> str:
    """`name` as it is asked and cached: lower case, without the final dot, non-ASCII labels as A-labels
    (IDNA 2003, as dnspython). ValueError unless DNS can hold it: labels of 1 to 63 octets, 253 in all
    (RFC 1035 §2.3.4), each octet printable ASCII or a space (what a mail domain or an SPF macro
    expansion can be: RFC 7208 §7.1 macro-literals, and "%_" is a space); no control character."""
    text = name[:-1] if name.endswith(".") else name
    if not text.isascii():
        try:
            text = dns.name.from_unicode(text).to_text(omit_final_dot=True)
        except Exception as exc:  # dnspython's IDNA and label errors
            raise ValueError(f"not a domain name: {name[:80]!r}") from exc
    text = text.lower()
    if not 0 < len(text) <= 253 or any(not 0 < len(label) <= 63 for label in text.split(".")):
        raise ValueError(f"not a domain name: {name[:80]!r}")
    if not text.isprintable():  # ASCII by now: printable is " " to "~"
        raise ValueError(f"not a domain name: {name[:80]!r}")
    return text


async def _ask(nc: NATS, subject: str, request: BaseModel, reply: type[R], timeout: float, failed: Callable[[str], R]) -> R:
    try:
        msg = await nc.request(subject, request.to_bytes(), timeout=timeout)
        return reply.from_bytes(msg.data)
    except TimeoutError:
        return failed("resolver did not answer")
    except Exception as exc:  # no responders, connection closed, a reply that does not parse
        return failed(f"resolver unavailable: {type(exc).__name__}")


class MxClient:
    def __init__(self, nc: NATS, timeout: float = 10.0):
        self.nc, self.timeout = nc, timeout

    async def lookup(self, domain: str) -> MxReply:
        return await _ask(
            self.nc,
            subjects.MX_LOOKUP,
            MxRequest(domain=domain),
            MxReply,
            self.timeout,
            lambda error: MxReply(domain=domain, status="temp_fail", error=error),
        )


class DnsClient:
    """`mailflow.authn.DnsLookup` through the resolver service (`dns.query`), whose cache all the
    services share. The default timeout outlasts the resolver's own lifetime (8 s), so a slow DNS
    comes back as the resolver's temp_fail with its reason rather than as silence.

    Answers are also kept here, each for the TTL the resolver gave it (at most `max_ttl`), `cache_size`
    of them: the checks of one inbound message ask 4 to 10 questions, and a NATS round trip costs
    ~0.3 ms of CPU where a hit costs ~1 µs (measured: SPF over the resolver cost 1-1.5 ms of CPU per
    check of a cached include+redirect record; the 80 % ingest target of issue 14 has no room for
    that). The resolver stays the one place that asks DNS and decides what an answer is; this is only
    its answers remembered near the asker, and a temp_fail is never remembered."""

    def __init__(self, nc: NATS, timeout: float = 10.0, cache_size: int = 10_000, max_ttl: float = 3600.0):
        self.nc, self.timeout, self.max_ttl = nc, timeout, max_ttl
        self.cache: Cache[tuple[str, str], DnsAnswer] = Cache(cache_size)
        self._flights: SingleFlight[tuple[str, str], DnsAnswer] = SingleFlight()

    async def query(self, name: str, rdtype: DnsType) -> DnsAnswer:
        key = (name.lower(), rdtype)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        return await self._flights.run(key, lambda: self._ask(name, rdtype, key))

    async def _ask(self, name: str, rdtype: DnsType, key: tuple[str, str]) -> DnsAnswer:
        answer = await _ask(
            self.nc,
            subjects.DNS_QUERY,
            DnsQuery(name=name, type=rdtype),
            DnsAnswer,
            self.timeout,
            lambda error: DnsAnswer(name=name, type=rdtype, status="temp_fail", error=error),
        )
        if answer.status != "temp_fail":
            self.cache.put(key, answer.model_copy(update={"cached": True}), min(answer.ttl, self.max_ttl))
        return answer
