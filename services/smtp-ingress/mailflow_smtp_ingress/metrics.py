"""All of smtp-ingress's metrics. Labels come from small closed sets: listener, stage, reason, result."""

from prometheus_client import Counter, Gauge, Histogram

LISTENERS = ("mx", "submission", "smtps")

SESSIONS = Counter("mailflow_smtp_sessions_total", "SMTP connections accepted", ["listener"])
SESSIONS_ACTIVE = Gauge("mailflow_smtp_sessions_active", "SMTP connections open now", ["listener"])
ACCEPTED = Counter(
    "mailflow_smtp_messages_accepted_total", "Messages durable in JetStream and answered 250", ["listener"]
)
ACCEPTED_BYTES = Counter("mailflow_smtp_accepted_bytes_total", "Bytes of accepted messages", ["listener"])
ACCEPTED_RECIPIENTS = Counter("mailflow_smtp_accepted_recipients_total", "Recipients of accepted messages")
# stage: connect, mail, rcpt, data, auth, command. reason: a short word, e.g. proxy_untrusted, relay_denied.
REJECTED = Counter(
    "mailflow_smtp_rejected_total",
    "Connections, commands, recipients and messages refused",
    ["stage", "reason"],
)
ACCEPT_SECONDS = Histogram(
    "mailflow_smtp_accept_duration_seconds",
    "From the end of DATA/BDAT LAST to the 250 (body and envelope durable in JetStream)",
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MESSAGE_BYTES = Histogram(
    "mailflow_smtp_message_size_bytes",
    "Size of accepted messages",
    buckets=(1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 33554432),
)
AUTH = Counter("mailflow_smtp_auth_total", "AUTH attempts", ["mechanism", "result"])
TLS = Counter("mailflow_smtp_tls_total", "TLS handshakes (STARTTLS and implicit)", ["result"])
# autoconfig.py. client: thunderbird, outlook; result: ok, not_ours (404), bad_request (400), too_large
# (413), unavailable (the store did not answer, 503), other_schema (an Autodiscover Error 600)
AUTOCONFIG = Counter(
    "mailflow_smtp_autoconfig_requests_total", "Mail client autoconfiguration requests, by client and result", ["client", "result"]
)
# notAfter of the certificate new TLS connections get (mailflow.tls.Certificates, set at each load)
TLS_CERT_EXPIRY = Gauge(
    "mailflow_smtp_tls_certificate_expiry_timestamp_seconds",
    "notAfter of the TLS certificate served now (Unix time); alert on it minus time()",
)
DIRECTORY_CACHE = Counter(
    "mailflow_smtp_directory_cache_total", "Recipient lookups by cache result", ["result"]
)
# check: spf_helo, spf_mailfrom, dkim (one per signature), arc, dmarc; result: the RFC 8601 result words.
AUTHN_RESULTS = Counter(
    "mailflow_smtp_authn_results_total", "Results of the inbound authentication checks", ["check", "result"]
)
AUTHN_SECONDS = Histogram(
    "mailflow_smtp_authn_duration_seconds",
    "SPF, DKIM, ARC and DMARC of one message together, from the end of DATA",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20),
)
JUNKED = Counter("mailflow_smtp_junked_total", "Messages accepted for the recipients' Junk (DMARC p=quarantine, rspamd's add header)")
INTERNAL_ERRORS = Counter("mailflow_smtp_internal_errors_total", "Unexpected exceptions answered 451")
# rspamd (rspamd.py). result: scanned, too_big (over rspamd_max_bytes, not scanned), unavailable (down,
# slow, error status, malformed answer). action: rspamd's actions (mailflow.rspamd.ACTIONS).
RSPAMD_CHECKS = Counter("mailflow_smtp_rspamd_checks_total", "Messages given to rspamd, by result", ["result"])
RSPAMD_ACTIONS = Counter("mailflow_smtp_rspamd_actions_total", "rspamd's answers, by action", ["action"])
RSPAMD_SECONDS = Histogram(
    "mailflow_smtp_rspamd_check_duration_seconds",
    "From the request to rspamd's answer (answered checks only)",
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
