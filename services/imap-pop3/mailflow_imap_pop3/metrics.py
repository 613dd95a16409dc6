"""All of imap-pop3's metrics. Labels come from closed sets: protocol (imap, pop3, managesieve), listener (plain,
tls), cmd (the command table's names, or "unknown"), result (ok, no, bad, error)."""

from prometheus_client import Counter, Gauge, Histogram

SESSIONS = Counter("mailflow_imap_sessions_total", "Connections accepted", ["protocol", "listener"])
SESSIONS_ACTIVE = Gauge("mailflow_imap_sessions_active", "Connections open now", ["protocol"])
COMMANDS = Counter("mailflow_imap_commands_total", "Commands answered", ["protocol", "cmd", "result"])
COMMAND_SECONDS = Histogram(
    "mailflow_imap_command_duration_seconds",
    "Time from a whole command received to its reply written",
    ["protocol", "cmd"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LOGINS = Counter(
    "mailflow_imap_logins_total", "Login attempts by outcome (ok, failed, throttled, unavailable)",
    ["protocol", "result"],
)  # fmt: skip
MESSAGES = Counter("mailflow_imap_messages_sent_total", "Message bodies (or parts) sent", ["protocol"])
BYTES = Counter("mailflow_imap_body_bytes_sent_total", "Octets of message bodies sent", ["protocol"])
EVENTS = Counter("mailflow_imap_events_total", "Mailbox events received from the store", ["kind"])
REVOKED = Counter(
    "mailflow_imap_sessions_revoked_total",
    "Sessions ended because the store revoked the user's credentials (password, disable, delete)",
)
PUSH_SECONDS = Histogram(
    "mailflow_imap_push_latency_seconds",
    "From a mailbox event received to the untagged response written to an IDLE client",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
PROXY = Counter("mailflow_imap_proxy_headers_total", "PROXY protocol headers by outcome", ["result"])
TLS = Counter("mailflow_imap_tls_handshakes_total", "TLS handshakes (STARTTLS, STLS, implicit)", ["result"])
# notAfter of the certificate new TLS connections get (mailflow.tls.Certificates, set at each load)
TLS_CERT_EXPIRY = Gauge(
    "mailflow_imap_tls_certificate_expiry_timestamp_seconds",
    "notAfter of the TLS certificate served now (Unix time); alert on it minus time()",
)
REFUSED = Counter(
    "mailflow_imap_connections_refused_total", "Connections refused over a cap", ["listener", "reason"]
)
EVICTED = Counter(
    "mailflow_imap_connections_evicted_total",
    "Sessions not logged in, ended to make room at the total cap",
    ["listener"],
)


class CommandMetrics:
    """COMMANDS and COMMAND_SECONDS for one protocol, their labelled children looked up once per
    (command, result) — `labels()` on every command costs more than the counting."""

    def __init__(self, protocol: str):
        self.protocol = protocol
        self._counters: dict[tuple[str, str], Counter] = {}
        self._timers: dict[str, Histogram] = {}

    def observe(self, cmd: str, result: str, seconds: float) -> None:
        counter = self._counters.get((cmd, result))
        if counter is None:
            counter = self._counters[(cmd, result)] = COMMANDS.labels(self.protocol, cmd, result)
        timer = self._timers.get(cmd)
        if timer is None:
            timer = self._timers[cmd] = COMMAND_SECONDS.labels(self.protocol, cmd)
        counter.inc()
        timer.observe(seconds)
