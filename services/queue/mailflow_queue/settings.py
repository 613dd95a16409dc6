"""All of queue's settings (environment prefix MAILFLOW_QUEUE_)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from mailflow.services import QUEUE
from mailflow.settings import ServiceSettings, common

DAY = 24 * 3600.0


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=QUEUE.prefix, extra="ignore", populate_by_name=True)

    http_listen: str = QUEUE.http_listen  # /healthz, /readyz, /metrics, admin REST, /trace/{queue_id}
    database_url: str = "sqlite:///./data/queue.db"  # or postgresql+psycopg://...
    # Header X-Mailflow-Admin-Token of every admin call (the CLI's `mailflow queue ...`). A secret.
    admin_token: SecretStr = common("admin_token")
    # Retry schedule (issue 4): first retry after ~1 min, doubling, capped at 1 h, +-jitter.
    first_retry_s: float = 60.0
    max_retry_s: float = 3600.0
    retry_jitter: float = 0.15  # fraction of the delay, both ways
    max_lifetime_s: float = 5 * DAY  # then the recipient bounces (Status 4.4.7, Action failed)
    # A delay DSN (RFC 3464 Action: delayed) after this long in the queue; 0 = never.
    delay_notice_s: float = 4 * 3600.0
    # A job not answered for this long is published again (delivery is idempotent).
    inflight_timeout_s: float = 1800.0
    scan_interval_s: float = 1.0  # how often the scheduler looks for due retries
    # Replicas on one PostgreSQL database: one runs the scheduler, holding a lease for this long ahead;
    # another takes over between lease - renew and lease + renew seconds after the holder died. More
    # than twice scheduler_renew_s. (SQLite: one queue process, always the scheduler.)
    scheduler_lease_s: float = Field(3.0, gt=0)
    scheduler_renew_s: float = Field(1.0, gt=0)  # how often the holder renews the lease and a standby tries to take it
    retain_done_s: float = DAY  # finished messages stay visible in `queue list --state delivered` this long
    # RET not given: return the whole message in a failure DSN up to this size, else headers only.
    dsn_full_max_bytes: int = 1024 * 1024
    intake_batch: int = 256  # envelopes per transaction, about: a fetch takes intake_batch/8 envelope groups
    results_batch: int = 256  # results per transaction, about: a fetch takes results_batch/16 delivery batches
    stream_replicas: int = 1  # 3 on Kubernetes (R3 streams)
    # TLS-RPT (RFC 8460): each day's report of the TLS sessions with a domain's MX, to the addresses of the
    # domain's `_smtp._tls` TXT record. Its From: and contact address (empty: tlsrpt-noreply@<hostname>):
    # best an address of a domain with DKIM keys (`mailflow dkim keygen`), which delivery signs with.
    tls_reports: bool = True
    tls_report_from: str = ""
    tls_report_organization: str = ""  # the report's organization-name (empty: the hostname)

    @model_validator(mode="after")
    def _lease_outlasts_renewals(self) -> Settings:
        if self.scheduler_lease_s <= 2 * self.scheduler_renew_s:
            raise ValueError("scheduler_lease_s must be more than twice scheduler_renew_s")
        return self
