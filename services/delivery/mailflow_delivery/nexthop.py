"""Where a remote domain's mail goes next: a transport map entry, the relay (smarthost), or its own MX.

Pure: no I/O, no clock. `parse_routes` and `parse_host` raise ValueError naming the entry at fault, so
a malformed MAILFLOW_DELIVERY_ROUTES or RELAY_HOST stops delivery at startup (settings.py); once
built, `Router.next_hop(domain)` never fails: every domain has a next hop.

The one rule, first match wins:
  1. the map's entry for the domain itself;
  2. the map's `*.parent` entry nearest to the domain (subdomains only: `*.example.com` does not
     match example.com itself);
  3. the relay, when MAILFLOW_DELIVERY_RELAY_HOST is set;
  4. the domain's own MX (RFC 5321 §5.1).
A map entry is `domain=route`, entries separated by commas or white space; the route is
  `mx`             the domain's own MX, also when a relay is set (an exception to the relay);
  `host:port`      the MX of `host` (its own address when it has no MX), as Postfix's transport map;
  `[host]:port`    `host` itself, no MX lookup; an IP address is always taken as it is.
The port may be left out (MAILFLOW_DELIVERY_REMOTE_PORT, 25). Names are compared in lower case,
A-labels (IDNA) as DNS carries them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from mailflow_delivery import smtp_out

MAX_ENTRIES = 10_000  # a map is configuration, not data: anything larger is a mistake
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")  # anchored by fullmatch; no nested repetition


@dataclass(frozen=True)
class NextHop:
    """`kind` mx: the recipient domain's MX (`host` is the domain); map: a transport map entry; relay:
    the smarthost. `tls` and `auth` (the relay's) are None for the others: the MX policy applies."""

    kind: Literal["mx", "map", "relay"]
    host: str
    port: int | None = None  # None: MAILFLOW_DELIVERY_REMOTE_PORT
    lookup_mx: bool = True  # ask the resolver for host's MX; False: connect to host itself
    tls: smtp_out.TlsPolicy | None = field(default=None, compare=False)
    auth: smtp_out.Credentials | None = field(default=None, compare=False, repr=False)

    def target(self) -> str:
        """`[host]:port` or `host:port`, as the map writes it (the port only when one was given)."""
        host = f"[{self.host}]" if not self.lookup_mx else self.host
        return host + (f":{self.port}" if self.port else "")

    def __str__(self) -> str:
        """What the trace event, the log line and the diagnostic say: `mx`, `relay [h]:587`, `map h:25`."""
        return "mx" if self.kind == "mx" else f"{self.kind} {self.target()}"


_MX = NextHop("mx", "")  # the map's `mx`: the recipient domain's own MX


def domain_name(text: str) -> str:
    """A DNS name in lower case without the final dot; ValueError if it cannot be one (A-labels only)."""
    name = text.strip().lower().removesuffix(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"{text!r} is not a domain name (letters, digits, '-' and '_' in dot-separated labels)")
    return name


def parse_host(text: str) -> tuple[str, bool]:
    """`host`, `[host]`, an IP address or `[IPv6]`: (host, bracketed). An IP address counts as
    bracketed (there is nothing to look up)."""
    bracketed = text.startswith("[") and text.endswith("]")
    inner = text[1:-1] if bracketed else text
    try:
        return str(ipaddress.ip_address(inner)), True
    except ValueError:
        pass
    return domain_name(inner), bracketed


def parse_target(text: str) -> NextHop:
    """`host[:port]` or `[host][:port]` (an IPv6 address only in brackets) -> a map NextHop."""
    host, port = text, None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"{text!r}: '[' without ']'")
        host, rest = text[: close + 1], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: only ':port' may follow ']'")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    name, bracketed = parse_host(host)
    return NextHop("map", name, int(port) if port is not None else None, lookup_mx=not bracketed)


def parse_routes(text: str) -> dict[str, NextHop]:
    """The transport map: {domain or `*.parent`: next hop}. ValueError naming the first bad entry."""
    routes: dict[str, NextHop] = {}
    entries = text.replace(",", " ").split()
    if len(entries) > MAX_ENTRIES:
        raise ValueError(f"{len(entries)} entries: at most {MAX_ENTRIES}")
    for entry in entries:
        key, eq, value = entry.partition("=")
        try:
            if not eq or not value:
                raise ValueError("expected domain=route")
            wildcard = key.startswith("*.")
            domain = ("*." if wildcard else "") + domain_name(key[2:] if wildcard else key)
            if domain in routes:
                raise ValueError(f"{domain} has two routes")
            routes[domain] = _MX if value.lower() == "mx" else parse_target(value)
        except ValueError as exc:
            raise ValueError(f"entry {entry!r}: {exc}") from None
    return routes


class Router:
    """The transport map and the relay, asked once per recipient domain of a batch."""

    def __init__(self, routes: Mapping[str, NextHop] | None = None, relay: NextHop | None = None):
        self.routes, self.relay = dict(routes or {}), relay
        self.wildcards = any(k.startswith("*.") for k in self.routes)

    def next_hop(self, domain: str) -> NextHop:
        hop = self.routes.get(domain)
        if hop is None and self.wildcards:
            labels = domain.split(".")
            hop = next((h for k in range(1, len(labels)) if (h := self.routes.get("*." + ".".join(labels[k:])))), None)
        if hop is None:
            hop = self.relay or _MX
        return NextHop("mx", domain) if hop is _MX else hop
