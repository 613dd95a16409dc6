"""All of resolver's settings (environment prefix MAILFLOW_RESOLVER_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from mailflow.services import RESOLVER
from mailflow.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=RESOLVER.prefix, extra="ignore", populate_by_name=True)

    http_listen: str = RESOLVER.http_listen  # /healthz, /readyz, /metrics, GET /mx/{domain}
    # Comma-separated "host" or "host:port"; empty = the machine's /etc/resolv.conf.
    nameservers: str = ""
    timeout: float = 3.0  # per query to one nameserver
    lifetime: float = 8.0  # per lookup, all retries included; then temp_fail
    cache_size: int = 20_000  # domains
    max_ttl: int = 86_400  # cap on positive answers' TTL (seconds)
    negative_ttl: int = 300  # cap on NXDOMAIN / no-record answers (RFC 2308 lets the SOA lower it)
    ipv6: bool = True  # look up AAAA as well as A for mail hosts
