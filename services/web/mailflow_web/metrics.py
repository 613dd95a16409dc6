"""All of web's metrics. Labels come from small closed sets: kind (admin, user), result."""

from prometheus_client import Counter, Gauge

# result: ok, failed (wrong address or password, or not an admin), throttled (refused unasked)
LOGINS = Counter("mailflow_web_logins_total", "Console logins, by kind of session and result", ["kind", "result"])
LIVE_VIEWS = Gauge("mailflow_web_live_views", "Pipeline pages open now (server-sent event streams)")
