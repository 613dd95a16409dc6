"""All of resolver's metrics. `type` is "mail-hosts" for delivery's MX lookups (`dns.mx`: MX, then the
hosts' addresses), else the type of a single question (`dns.query`: TXT, A, AAAA, MX, PTR, SRV, TLSA)."""

from prometheus_client import Counter, Histogram

LOOKUPS = Counter("mailflow_resolver_lookups_total", "Lookups that went to DNS, by type and outcome", ["type", "status"])
CACHE = Counter("mailflow_resolver_cache_total", "Questions answered from the cache or not", ["type", "result"])
REQUESTS = Counter("mailflow_resolver_requests_total", "Questions received over NATS, by subject", ["subject", "result"])
LOOKUP_SECONDS = Histogram(
    "mailflow_resolver_lookup_duration_seconds",
    "Time for a lookup that went to DNS",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
