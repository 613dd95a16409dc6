"""All of queue's metrics."""

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("mailflow_queue_messages_total", "Messages taken over from MAIL", ["result"])  # recorded|duplicate
JOBS = Counter("mailflow_queue_jobs_published_total", "Delivery jobs published", ["kind"])  # first|retry|republish
RESULTS = Counter("mailflow_queue_results_total", "Delivery results applied", ["outcome"])
TLS_SESSIONS = Counter("mailflow_queue_tls_sessions_total", "Sessions with remote MXs counted for TLS-RPT (RFC 8460)")
TLS_REPORTS = Counter("mailflow_queue_tls_reports_total", "TLS-RPT daily reports by outcome", ["outcome"])  # sent|no_record|gave_up
# outcome: delivered|deferred|bounced|expired|stale
DSNS = Counter("mailflow_queue_dsn_total", "Delivery status notifications made", ["kind"])  # failure|delay|success
BODIES_DELETED = Counter("mailflow_queue_bodies_deleted_total", "Bodies removed from BODY once final")
# set by the replica that runs the scheduler (mailflow_queue_scheduler_active 1); a standby's are stale
RECIPIENTS = Gauge("mailflow_queue_recipients", "Recipients in the queue database by state", ["state"])
SCHEDULER_ACTIVE = Gauge("mailflow_queue_scheduler_active", "1 while this process holds the scheduler lease")
DELIVERY_LATENCY = Histogram(
    "mailflow_queue_delivery_latency_seconds",
    "From a message's acceptance to each recipient's delivery (stored here, or taken by the remote MX)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400),
)
BATCH_SECONDS = Histogram(
    "mailflow_queue_batch_duration_seconds",
    "Time to handle one batch",
    ["stage"],  # intake|results|scan|finish
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
