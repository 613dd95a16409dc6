"""All of mailbox-store's settings (environment prefix MAILFLOW_STORE_; the secrets are MAILFLOW_ADMIN_TOKEN,
MAILFLOW_SERVICE_TOKEN and MAILFLOW_SESSION_KEY).

A missing secret or a malformed value fails at startup with a pydantic error naming the variable.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from mailflow.services import MAILBOX_STORE
from mailflow.settings import ServiceSettings, common


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=MAILBOX_STORE.prefix, extra="ignore", populate_by_name=True)

    http_listen: str = MAILBOX_STORE.http_listen  # REST (admin, delivery, access), /healthz, /readyz, /metrics, /docs
    # SQLite by default (WAL, synchronous=FULL); PostgreSQL with "postgresql+psycopg://user@host/db".
    database_url: str = "sqlite:///./data/mailbox-store.db"
    # Where message bodies go: "segments", append-only files in blob_dir (one store process per folder);
    # "postgres", the table blob_bodies of database_url, shared by every store process on it (the choice
    # for several replicas: services/mailbox-store/README.md, "Where bodies go").
    blobs: Literal["segments", "postgres"] = "segments"
    blob_dir: str = "./data/blobs"  # with blobs=segments: message bodies, content-addressed, in segment files
    # Header X-Mailflow-Admin-Token of the admin group. No default: the local runner generates one.
    admin_token: SecretStr = common("admin_token")

    # Users and quotas
    default_quota_bytes: int | None = None  # given to a new user created without a quota; None: unlimited
    recipient_delimiter: str = "+"  # user+tag@domain goes to user@domain; "" turns plus-addressing off
    max_message_bytes: int = 64 * 1024 * 1024  # larger deliveries and APPENDs are refused (Invalid)

    # Sessions and logins
    session_ttl: int = 7 * 86_400  # seconds a session token stays valid (an IMAP session may IDLE for days)
    # The secret session tokens are signed with (an HMAC key is derived from it); every store process
    # needs the same one and nothing else needs it. No default: the local runner generates one.
    session_key: SecretStr = common("session_key")
    # A token stops working at once in the store process that revoked it (password change, disable,
    # delete), and within this many seconds in the others (each re-reads a user's generation this often).
    session_check_interval: float = 1.0
    login_cache_ttl: float = 300.0  # seconds a verified password is remembered (HMAC, per process); 0: off
    argon2_time_cost: int = 3  # RFC 9106 §4 second recommended option (argon2-cffi's defaults)
    argon2_memory_kib: int = 65_536
    argon2_parallelism: int = 4
    # PBKDF2 rounds of new SCRAM-SHA-256 verifiers (RFC 7677 §4: at least 4096); each client login
    # spends them once. A user's verifier is made again with a new count at their next password login.
    scram_iterations: int = Field(4096, ge=4096)
    pop3_lock_ttl: int = 15  # seconds a POP3 maildrop lock lasts unless its session renews it (imap-pop3 does, every 5 s): how long a crashed replica's maildrop stays locked

    # Sieve scripts (RFC 5228), uploaded with ManageSieve (RFC 5804)
    sieve_max_script_bytes: int = 64 * 1024  # a larger script is refused (QUOTA/MAXSIZE)
    sieve_max_scripts: int = 16  # scripts per user (QUOTA/MAXSCRIPTS)

    # Database and storage tuning
    db_readers: int = 8  # threads (and connections) answering reads; writes go through one writer
    write_batch_max: int = 256  # operations committed together in one transaction (group commit)
    segment_bytes: int = 64 * 1024 * 1024  # a blob segment file is closed at this size
    delivery_key_days: int = 30  # idempotency keys older than this are forgotten
    # Expunge tombstones (QRESYNC VANISHED, RFC 7162 §3.2) kept per mailbox: maintenance drops the oldest
    # beyond this many; a client asking about a MODSEQ before them gets every known UID not present.
    expunged_keep: int = Field(100_000, ge=1)
    maintenance_interval: float = 300.0  # seconds between clean-ups (old keys, unreferenced blobs, segments)
    max_batch_items: int = 1_000  # items in one deliver or fetch call
    # SELECT listings of big mailboxes kept in memory (per process); smaller ones are scanned every time.
    listing_cache_bytes: int = 128 * 1024 * 1024
    listing_cache_min_messages: int = 2_000  # mailboxes with fewer messages are not cached

    # Spam training (learning.py): a message moved into Junk is learned by rspamd as spam, out of it
    # as ham. rspamd's controller, e.g. http://rspamd:11334; empty: off (the default).
    rspamd_url: str = ""
    # The controller's password (rspamd's `Password` header): a secret, never logged.
    rspamd_password: SecretStr = SecretStr("")
    rspamd_timeout: float = 10.0  # per learn call; the user's move never waits for it
    rspamd_learn_queue: int = 1000  # messages waiting to be learned; more are dropped (counted)
    rspamd_learn_max_bytes: int = 2 * 1024 * 1024  # larger ones are not learned (as smtp-ingress scans)

    @model_validator(mode="after")
    def _bodies_need_postgres(self) -> Settings:
        if self.blobs == "postgres" and not self.database_url.startswith("postgresql"):
            raise ValueError(f"{MAILBOX_STORE.var('blobs')}=postgres needs a PostgreSQL {MAILBOX_STORE.var('database_url')}")
        return self
