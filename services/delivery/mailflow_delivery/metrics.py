"""All of delivery's metrics."""

from prometheus_client import Counter, Gauge, Histogram

RECIPIENTS = Counter("mailflow_delivery_recipients_total", "Recipients handled, by route and outcome", ["route", "outcome"])
# route: local|remote; outcome: delivered|deferred|bounced
SESSIONS = Counter("mailflow_delivery_smtp_sessions_total", "Outgoing SMTP transactions", ["result"])  # ok|unreachable
# REQUIRETLS messages (RFC 8689) bounced because no hop could take them over authenticated TLS
REQUIRETLS = Counter("mailflow_delivery_requiretls_total", "RFC 8689: REQUIRETLS messages refused, and messages that said TLS-Required: No", ["result"])  # refused|tls_required_no
# DANE (RFC 7672, dane.py): each attempt at an MX host whose TLSA records apply, by RFC 8460 result type:
# success, tlsa-invalid (no usable record: sent encrypted only), dnssec-invalid (TLSA lookup failed: host
# skipped), starttls-not-supported, validation-failure (handshake failed or certificate matched no record)
DANE = Counter("mailflow_delivery_dane_total", "MX host attempts under DANE, by RFC 8460 result type", ["result"])
# Sieve at delivery (sieve.py), per user a script ran for: filed (into one or more mailboxes), sent
# (only redirected or rejected), discarded, error (did not compile or failed while running: kept in INBOX with a header saying why)
SIEVE = Counter("mailflow_delivery_sieve_total", "Users' Sieve scripts run at delivery, by result", ["result"])
# ... and the messages they queued: redirect, reject (an MDN to the sender), vacation (a reply)
SIEVE_SENT = Counter("mailflow_delivery_sieve_sent_total", "Messages Sieve scripts queued, by kind", ["kind"])
CONNECTIONS = Gauge("mailflow_delivery_smtp_connections", "Outgoing SMTP connections open now")
DUPLICATES = Counter("mailflow_delivery_redelivered_sent_total", "Redelivered jobs answered from the sent log, not sent again")
BATCH_SECONDS = Histogram(
    "mailflow_delivery_batch_duration_seconds",
    "Time to deliver one batch (local) or one SMTP transaction (remote)",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
MX_SECONDS = Histogram(
    "mailflow_delivery_mx_lookup_duration_seconds",
    "Time to get an MX answer from the resolver",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DKIM = Counter(
    "mailflow_delivery_dkim_messages_total",
    "Remote messages that could be signed: signed, unsigned (no key for the From domain), deferred (store away)",
    ["result"],
)
ARC = Counter(
    "mailflow_delivery_arc_messages_total",
    "Forwarded copies (aliases' external targets): sealed, unsealed (no key set for the alias domain, or a chain we did not judge)",
    ["result"],
)
STS_SESSIONS = Counter(
    "mailflow_delivery_mta_sts_results_total",
    "Remote deliveries under a domain's MTA-STS policy (RFC 8461): success, or each failure by its RFC 8460 result type",
    ["mode", "result"],
)
# mode: enforce|testing; result: success|failure (one of the two per transaction tried), and each failure
# seen on the way by its RFC 8460 type: starttls-not-supported|certificate-host-mismatch|certificate-expired|
# certificate-not-trusted|validation-failure|sts-policy-fetch-error|sts-policy-invalid|sts-webpki-invalid
STS_FETCHES = Counter(
    "mailflow_delivery_mta_sts_policy_fetches_total",
    "MTA-STS policy fetches: ok, or the RFC 8460 result type of the failure",
    ["result"],
)
