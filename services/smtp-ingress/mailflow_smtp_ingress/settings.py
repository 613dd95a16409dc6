"""All of smtp-ingress's settings (environment prefix MAILFLOW_SMTP_).

A malformed value fails at startup with pydantic's error naming the variable. An empty listen
address switches that listener off. TLS uses the common MAILFLOW_TLS_CERT/MAILFLOW_TLS_KEY; when
they are empty a self-signed pair is made under MAILFLOW_DATA_DIR/tls (local runs only).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from mailflow import mtasts, proxy_protocol
from mailflow.services import SMTP_INGRESS
from mailflow.settings import ServiceSettings

CheckMode = Literal["enforce", "report", "off"]


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=SMTP_INGRESS.prefix, extra="ignore", populate_by_name=True)

    http_listen: str = SMTP_INGRESS.http_listen  # /healthz, /readyz, /metrics
    listen: str = SMTP_INGRESS.listen("listen")  # inbound MX (port 25 in containers)
    submission_listen: str = SMTP_INGRESS.listen("submission_listen")  # RFC 6409 submission: STARTTLS, then AUTH (587)
    smtps_listen: str = SMTP_INGRESS.listen("smtps_listen")  # RFC 8314 implicit TLS submission (465)
    backlog: int = 512

    # PROXY protocol v1/v2 (HAProxy) in front of every listener, e.g. behind a Kubernetes load balancer.
    # The address it carries is the client's for relay checks, limits and the Received: header.
    proxy_protocol: bool = False
    # comma-separated CIDRs of the load balancers allowed to send a PROXY header; empty: none (then
    # PROXY_PROTOCOL on fails at startup). Any other peer, or a connection without a header, is closed.
    proxy_trusted: str = ""
    proxy_timeout: float = 5.0  # seconds to wait for the header

    # Limits, with the RFC minimum or default each comes from.
    max_message_bytes: int = 25 * 1024 * 1024  # advertised as SIZE (RFC 1870); 552 5.3.4 beyond
    max_recipients: int = 100  # RFC 5321 §4.5.3.1.8 minimum; 452 4.5.3 beyond
    # recipients one transaction may queue once aliases' external targets are added (each is a remote
    # delivery); the RCPT that would pass it gets 452 4.5.3 and the client sends it again later
    max_expanded_recipients: int = 1000
    max_command_line: int = 512  # octets with CRLF, RFC 5321 §4.5.3.1.4
    max_text_line: int = 1000  # octets with CRLF, RFC 5321 §4.5.3.1.6
    max_auth_line: int = 12288  # RFC 4954 §4: AUTH lines may be longer
    tls_handshake_timeout: float = 30.0
    # Slow clients (slowloris; mailflow.connections.InputDeadline): bytes dribbled in extend no deadline.
    idle_timeout: float = 300.0  # RFC 5321 §4.5.3.2.7: a command (with its message) must be in within this of the reply before it
    min_input_rate: float = 500.0  # octets/s: a command or message gets 1 s more per this many octets (Postfix's smtpd_min_data_rate)
    session_lifetime: float = 1800.0  # a session that has not authenticated (every MX session) ends after this, 421 4.4.2
    max_connections: int = 2000  # in total, and never above RLIMIT_NOFILE (raised to hard) - 128; then the oldest session not authenticated and between transactions is evicted, or 421 4.3.2
    max_connections_per_ip: int = 50  # per client address; 421 4.7.0 beyond
    max_errors: int = 20  # 4xx/5xx replies in one session, then 421 4.7.0 and close
    max_auth_failures: int = 3  # per session, then 421 4.7.0 and close
    auth_failures_per_ip: int = 10  # within auth_failure_window: then 454 4.7.0 until the window passes
    auth_failure_window: float = 600.0
    auth_failure_delay: float = 1.0  # seconds before a 535 answer (slows guessing)
    require_tls_for_auth: bool = True  # RFC 8314: never take a password in clear text
    mx_auth: bool = False  # offer AUTH on the MX listener too (after STARTTLS)
    # An authenticated session asks the store at MAIL FROM whether its login still stands when it was
    # last confirmed longer ago than this: a password change, disable or delete stops its mail within it.
    auth_recheck_interval: float = 1.0

    # Recipient lookups (mailbox-store) are cached: a REST call per RCPT would cap the throughput.
    directory_timeout: float = 5.0  # then 451 4.4.3
    directory_cache_ttl: float = 30.0  # local recipients
    directory_negative_ttl: float = 5.0  # unknown users and non-local domains
    directory_cache_size: int = 100_000  # recipients remembered (known and unknown together)

    publish_timeout: float = 10.0  # JetStream PubAck wait per publish; then 451 4.3.0
    # A body up to this size travels inside the envelope on mail.queued (one JetStream write, not a
    # body in stream BODY plus the envelope); 0: always stream BODY. See mailflow.bodies.
    inline_max_bytes: int = 256 * 1024
    drain_timeout: float = 25.0  # SIGTERM: open transactions may finish within this, then 421

    # Inbound mail authentication (checks.py): mail on the MX listener from a client that has not
    # authenticated. enforce: the check's verdict can refuse the message (550, or 451 when the check
    # could not be done); report: it only goes into the Authentication-Results header; off: not run.
    # DMARC needs SPF or DKIM on (its alignment takes their results; RFC 7489 §4.2).
    check_spf: CheckMode = "report"  # RFC 7208; enforce: a fail (HELO or MAIL FROM) is 550 5.7.23
    check_dkim: CheckMode = "report"  # RFC 6376; enforce: signed, none passes, one fails: 550 5.7.20
    check_arc: CheckMode = "report"  # RFC 8617; enforce: a failed chain is 550 5.7.29
    check_dmarc: CheckMode = "enforce"  # RFC 7489: p=reject is 550 5.7.1, p=quarantine the Junk folder
    check_timeout: float = 20.0  # all checks of a message together (RFC 7208 §4.6.4: SPF at least 20 s); a check still running is then a temperror
    dns_timeout: float = 10.0  # one DNS question to the resolver service (it gives up after its own 8 s lifetime)
    # An SPF verdict is kept this long for the exact (client IP, MAIL FROM, HELO) it was reached for: a
    # sender's MTA sends message after message (a list, a newsletter), and evaluating a record again costs
    # ~0.1 ms of CPU with every answer cached. 0: evaluate every time. Never a temperror.
    check_spf_cache_s: float = 60.0
    check_spf_cache_size: int = 10_000

    # Spam filtering with rspamd at the end of DATA (rspamd.py). Its normal worker's URL, e.g.
    # http://rspamd:11333; empty: off (the default, so a local run needs no rspamd).
    rspamd_url: str = ""
    # rspamd's own task_timeout is 8 s; an SMTP client waits 10 minutes for the reply (RFC 5321 §4.5.3.2.6)
    rspamd_timeout: float = 10.0
    # Larger messages are not scanned (counted too_big): spam is small, scanning big attachments is CPU
    # for nothing (SpamAssassin's spamc skips messages over 500 KB by default).
    rspamd_max_bytes: int = 2 * 1024 * 1024
    # rspamd down, slow or answering nonsense: accept unscanned (true) or defer with 451 4.7.1 (false).
    rspamd_fail_open: bool = True
    # Scan authenticated submission too. Off: the sender is a known user; scanning their mail mostly
    # catches a stolen password, and a false "reject" of a user's own mail is worse than none (Haraka's
    # rspamd plugin skips authenticated senders by default too). On: reject/defer as for MX mail,
    # add-header adds X-Spam but never Junk (the recipients are elsewhere).
    rspamd_submission: bool = False
    # rspamd's `Password` header, if its worker asks for one (a controller or a password-protected proxy).
    rspamd_password: SecretStr = SecretStr("")

    # smtp-ingress's HTTPS listener, on the MX listener's address, with MAILFLOW_TLS_CERT/KEY (which must
    # then name the host names below too): for every domain of ours, the MTA-STS policy (RFC 8461,
    # mtasts.py) at https://mta-sts.<domain>/.well-known/mta-sts.txt (its TXT record printed by `mailflow
    # dns records`), and mail clients' autoconfiguration (autoconfig.py): Thunderbird's at
    # https://autoconfig.<domain>/mail/config-v1.1.xml, Outlook's Autodiscover at
    # https://autodiscover.<domain>/autodiscover/autodiscover.xml. The port; 0: not served (the default;
    # 443 where that port is published).
    https_port: int = Field(0, ge=0, lt=65536)
    mta_sts_mode: Literal["enforce", "testing", "none"] = "testing"  # RFC 8461 §5; start with testing, then enforce
    mta_sts_mx: str = ""  # the MX patterns senders may use, comma-separated (*.example.com: one label); empty: MAILFLOW_HOSTNAME
    mta_sts_max_age: int = 604_800  # seconds senders keep the policy (RFC 8461 §3.2: at most 31557600)

    @model_validator(mode="after")
    def _mta_sts(self) -> Settings:
        try:
            mtasts.published(self.mta_sts_mode, self.mta_sts_mx, self.mta_sts_max_age, self.hostname)
        except mtasts.PolicyError as exc:
            raise ValueError(f"{SMTP_INGRESS.prefix}MTA_STS_*: {exc}") from None
        return self

    @model_validator(mode="after")
    def _proxy(self) -> Settings:
        proxy_protocol.check_settings(self.proxy_protocol, self.proxy_trusted, SMTP_INGRESS.prefix)
        return self

    @model_validator(mode="after")
    def _dmarc_inputs(self) -> Settings:
        if self.check_dmarc != "off" and self.check_spf == "off" and self.check_dkim == "off":
            raise ValueError(
                f"{SMTP_INGRESS.prefix}CHECK_DMARC needs CHECK_SPF or CHECK_DKIM on: without them every "
                "message would fail DMARC"
            )
        return self
