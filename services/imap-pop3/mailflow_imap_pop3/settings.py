"""All of imap-pop3's settings (environment prefix MAILFLOW_IMAP_).

Every limit names the RFC that sets its floor. A listener set to "" is not started.
"""

from __future__ import annotations

from pydantic import model_validator
from pydantic_settings import SettingsConfigDict

from mailflow import proxy_protocol
from mailflow.services import IMAP_POP3
from mailflow.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=IMAP_POP3.prefix, extra="ignore", populate_by_name=True)

    # Listeners (dev ports = standard + 2000). "" disables one.
    listen: str = IMAP_POP3.listen("listen")  # IMAP, STARTTLS
    imaps_listen: str = IMAP_POP3.listen("imaps_listen")  # IMAP over implicit TLS (RFC 8314)
    pop3_listen: str = IMAP_POP3.listen("pop3_listen")  # POP3, STLS
    pop3s_listen: str = IMAP_POP3.listen("pop3s_listen")  # POP3 over implicit TLS (RFC 8314)
    managesieve_listen: str = IMAP_POP3.listen("managesieve_listen")  # ManageSieve (RFC 5804), STARTTLS
    http_listen: str = IMAP_POP3.http_listen  # /healthz, /readyz, /metrics

    # Open connections, all five listeners together, counted by the real client (after PROXY; IPv6 by
    # /64). The total is never above RLIMIT_NOFILE (raised to its hard limit) minus a reserve; at it
    # the oldest session that has not logged in and waits for the client is evicted to make room.
    # Over a cap IMAP says `* BYE`, POP3 `-ERR [SYS/TEMP]` (RFC 3206), and the connection closes.
    # Mail clients keep a few connections each (Thunderbird up to 5 per account, IDLE holds one): raise
    # the per-client cap when many users share one address (NAT). 0 turns a cap off.
    max_connections: int = 4000
    max_connections_per_ip: int = 100

    # Plaintext LOGIN/USER/AUTH PLAIN without TLS: refused (LOGINDISABLED, RFC 3501 §6.2.3) unless the
    # client is on loopback or this is set.
    allow_plaintext_auth: bool = False
    # A login without "@" gets "@<default_domain>" (like Dovecot's auth_default_realm); "" keeps it as is.
    default_domain: str = ""

    # Slow clients (slowloris; mailflow.connections.InputDeadline), IMAP and POP3: bytes dribbled in extend no deadline.
    preauth_timeout: float = 60.0  # before login a command (with its literals) must be in within this of the reply before it (RFC 3501 §5.4 allows shorter); logged in: idle_timeout, pop3_timeout
    min_input_rate: float = 500.0  # octets/s: a command gets 1 s more per this many octets (an APPEND of 50 MB over a slow link)
    login_timeout: float = 180.0  # before login a session ends after this, whatever it sends (Dovecot's login processes: 3 minutes)

    # IMAP limits
    max_line_bytes: int = 65_536  # one command line without its literals; RFC 7162 §4 asks >= 8192
    max_literal_bytes: int = 65_536  # a literal in any command but APPEND (search strings, passwords)
    max_append_bytes: int = 50 * 1024 * 1024  # one APPEND message, advertised as APPENDLIMIT (RFC 7889)
    # Before authentication only CAPABILITY, NOOP, LOGOUT, ID, STARTTLS, LOGIN and AUTHENTICATE are
    # allowed (RFC 3501 §6.1-6.2): a line or a literal (a user name, a password) of a few KiB is plenty;
    # APPEND's literal gets this limit too, so nothing large is read from a client no one knows.
    preauth_max_line_bytes: int = 8192  # RFC 2971 lets ID values be 1024 octets each (rarely sent)
    preauth_max_literal_bytes: int = 8192
    max_bad_commands: int = 20  # BAD replies in a row before "* BYE"
    idle_timeout: float = 1800.0  # RFC 3501 §5.4: the autologout timer is at least 30 minutes
    fetch_batch: int = 250  # messages per store round trip in FETCH
    # NOOP/CHECK ask the store for changes only if an event announced one, or events may have been
    # missed (no subscription, a NATS reconnect), or the last look is older than this; 0: always ask.
    noop_store_check: float = 1.0
    # RFC 5267 §4.2: searches kept up to date (RETURN (UPDATE)) per session; each holds its matches'
    # UIDs and costs work at every change; one more is answered once, with NOUPDATE
    max_search_contexts: int = 8

    # ManageSieve limits (lines and the preauth limits are IMAP's, above)
    managesieve_max_script_bytes: int = 64 * 1024  # a script literal after login; the store has its own cap (MAILFLOW_STORE_SIEVE_MAX_SCRIPT_BYTES)

    # POP3 limits
    pop3_timeout: float = 600.0  # RFC 1939 §3: the inactivity autologout timer is at least 10 minutes
    pop3_lock_renew_s: float = 5.0  # a POP3 session renews its maildrop lock this often (the store's lasts MAILFLOW_STORE_POP3_LOCK_TTL, 15 s)
    pop3_max_line: int = 255  # RFC 2449 §4: a command line is at most 255 octets with CRLF
    pop3_max_pipelined_bytes: int = 8192  # commands held while one runs (RFC 2449 PIPELINING), then pause
    pop3_max_bad_commands: int = 10
    pop3_prefetch_bytes: int = 2 * 1024 * 1024  # RETR reads ahead this much of the next messages

    # Logins: failures per client address (IPv6 by /64) within the window cost a growing delay
    # (2^(n - free) s, capped), and past `login_failures_max` every attempt is refused unchecked.
    login_failures_free: int = 3
    login_failures_max: int = 20
    login_failure_window: float = 900.0
    login_max_delay: float = 15.0
    # Verified credentials are remembered this long (HMAC under a per-process key; 0 disables).
    auth_cache_ttl: float = 30.0
    auth_cache_size: int = 10_000
    # A password change, disable or delete ends the user's sessions at once (UserRevoked over NATS).
    # In case that event was lost, every this many seconds (and after a NATS reconnection) the store is
    # asked which of our sessions' and cached logins' tokens it refuses now. 0: never.
    revocation_check: float = 30.0

    # PROXY protocol v1/v2 (HAProxy) in front of every listener, e.g. behind a Kubernetes load balancer.
    # The address it carries is the client's for logs, throttling and the connection caps.
    proxy_protocol: bool = False
    # comma-separated CIDRs of the load balancers allowed to send a PROXY header; empty: none (then
    # PROXY_PROTOCOL on fails at startup). Any other peer, or a connection without a header, is closed.
    proxy_trusted: str = ""
    proxy_timeout: float = 5.0  # seconds to wait for the header

    # SIGTERM: how long running commands may take before the connections are cut.
    drain_timeout: float = 20.0
    store_timeout: float = 30.0  # one store REST call
    tls_handshake_timeout: float = 15.0

    @model_validator(mode="after")
    def _proxy(self) -> Settings:
        proxy_protocol.check_settings(self.proxy_protocol, self.proxy_trusted, IMAP_POP3.prefix)
        return self
