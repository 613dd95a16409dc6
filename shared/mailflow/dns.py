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
    comes back as the resolver's temp_fail with its reason rather than as silence."""

    def __init__(self, nc: NATS, timeout: float = 10.0):
        self.nc, self.timeout = nc, timeout

    async def query(self, name: str, rdtype: DnsType) -> DnsAnswer:
        return await _ask(
            self.nc,
            subjects.DNS_QUERY,
            DnsQuery(name=name, type=rdtype),
            DnsAnswer,
            self.timeout,
            lambda error: DnsAnswer(name=name, type=rdtype, status="temp_fail", error=error),
        )
