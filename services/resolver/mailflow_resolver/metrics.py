"""All of resolver's metrics."""

from prometheus_client import Counter, Histogram

LOOKUPS = Counter("mailflow_resolver_lookups_total", "MX lookups that went to DNS, by outcome", ["status"])
CACHE = Counter("mailflow_resolver_cache_total", "MX questions answered from the cache or not", ["result"])
REQUESTS = Counter("mailflow_resolver_requests_total", "MX questions received over NATS", ["result"])
LOOKUP_SECONDS = Histogram(
    "mailflow_resolver_lookup_duration_seconds",
    "Time for a lookup that went to DNS",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
