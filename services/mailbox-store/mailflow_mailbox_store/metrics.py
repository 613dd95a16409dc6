"""All of mailbox-store's metrics. Labels come from small closed sets (routes, statuses, kinds)."""

from prometheus_client import Counter, Gauge, Histogram

REQUEST_SECONDS = Histogram(
    "mailflow_mailbox_store_request_duration_seconds",
    "Time to answer a REST call, by route and result (ok, client_error, unavailable, error)",
    ["route", "result"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
DELIVERIES = Counter(
    "mailflow_mailbox_store_deliveries_total",
    "Delivered items by status (stored, duplicate, unknown_user, quota_exceeded, failed)",
    ["status"],
)
APPENDED_BYTES = Counter(
    "mailflow_mailbox_store_appended_bytes_total", "Bytes of messages stored (deliveries, APPEND)"
)
LOGINS = Counter(
    "mailflow_mailbox_store_logins_total", "Authentications by result (ok, cached, failed)", ["result"]
)
EVENTS = Counter(
    "mailflow_mailbox_store_events_published_total",
    "MailboxEvents published, by kind (and UserRevoked as kind revoked)",
    ["kind"],
)
SESSIONS_REFUSED = Counter(
    "mailflow_mailbox_store_sessions_refused_total",
    "Access calls refused by their session token (bad: forged or expired; revoked: old generation)",
    ["why"],
)
TRACES = Counter("mailflow_mailbox_store_traces_published_total", "TraceEvents published, by step", ["step"])
WRITE_GROUP_SIZE = Histogram(
    "mailflow_mailbox_store_write_group_operations",
    "Write operations committed together in one transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
WRITE_SECONDS = Histogram(
    "mailflow_mailbox_store_write_duration_seconds",
    "Time of one group commit (bodies stored, operations run, COMMIT)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
MERGED_OPS = Counter(
    "mailflow_mailbox_store_merged_operations_total", "Write operations (deliveries) run merged with others"
)
BLOB_BYTES = Counter(
    "mailflow_mailbox_store_blob_written_bytes_total", "Body bytes written to the blob store"
)
DB_ERRORS = Counter(
    "mailflow_mailbox_store_db_errors_total", "Database failures by side (read, write)", ["side"]
)
# what: operation (a unique violation: another store process stored the same first), group (a deadlock
# between two store processes' transactions). Both only with several store processes on PostgreSQL.
WRITE_RETRIES = Counter(
    "mailflow_mailbox_store_write_retries_total", "Write operations and groups run again, by what", ["what"]
)
MAINTENANCE = Counter(
    "mailflow_mailbox_store_maintenance_removed_total",
    "Things removed by maintenance (keys, blobs, segments, locks, tombstones)",
    ["what"],
)
LISTINGS = Counter(
    "mailflow_mailbox_store_listings_total",
    "SELECT listings by how they were made (kept: from memory, refreshed: kept + changes, scanned)",
    ["how"],
)
SEGMENT_BYTES = Gauge("mailflow_mailbox_store_segment_bytes", "Bytes in blob segment files")
BLOB_CORRUPT = Counter(
    "mailflow_mailbox_store_blob_corrupt_total",
    "Bodies read back whose SHA-256 is not the one stored for them (checked by compaction; blobs.intact)",
)
# kind: spam (moved into Junk), ham (moved out of it). result: learned, ignored (rspamd knew it already),
# failed (rspamd down/slow/refusing, body unreadable), dropped (queue full), too_big (over the size limit).
RSPAMD_LEARN = Counter(
    "mailflow_mailbox_store_rspamd_learn_total", "Messages given to rspamd to learn, by kind and result", ["kind", "result"]
)
