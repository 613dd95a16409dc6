"""All of resolver's settings (environment prefix MAILFLOW_RESOLVER_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from mailflow.services import RESOLVER
from mailflow.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=RESOLVER.prefix, extra="ignore", populate_by_name=True)

    http_listen: str = RESOLVER.http_listen  # /healthz, /readyz, /metrics, GET /mx/{domain}, GET /query/{type}/{name}
    # Comma-separated "host" or "host:port"; empty = the machine's /etc/resolv.conf.
    nameservers: str = ""
    timeout: float = 3.0  # per query to one nameserver
    lifetime: float = 8.0  # per lookup, all retries included; then temp_fail
    cache_size: int = 20_000  # domains (dns.mx)
    max_ttl: int = 86_400  # cap on positive answers' TTL (seconds)
    negative_ttl: int = 300  # cap on NXDOMAIN / no-record answers (RFC 2308 lets the SOA lower it)
    ipv6: bool = True  # look up AAAA as well as A for mail hosts
    # DNSSEC: ask the nameservers for their validation (AD and DO bits) and mark answers with the AD bit
    # `secure`; delivery then enforces the TLSA records (DANE, RFC 7672) of mail hosts whose DNS is
    # secure. This resolver does not validate itself: turn it on only when `nameservers` is a validating
    # resolver (unbound, BIND, Knot Resolver) on loopback or a network no one else can write to, since the
    # AD bit travels unprotected. Off: nothing is `secure` and DANE never applies.
    dnssec_trust_ad: bool = False
    # dns.query (single TXT, A, AAAA, MX, PTR, SRV, TLSA questions): the cache holds this many characters of records
    # in all (each answer counts its text plus 64), so its memory is bounded whatever the answers hold.
    query_cache_chars: int = 32 * 1024 * 1024
    # An answer with more records, or more characters of records, is a temp_fail (never cached): DNS caps
    # a message at 65,535 octets (RFC 1035 §4.2.2), which bounds what an answer can be; these bound what
    # one costs a check (and the NATS reply under its 1 MB max_payload).
    max_answer_records: int = 1_000
    max_answer_chars: int = 65_535
