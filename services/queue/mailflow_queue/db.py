"""The queue's own database: tables, the engine, migrations, and one thread that talks to it.

SQLite (WAL, synchronous=FULL: a commit survives power loss) by default, for one queue process;
PostgreSQL by URL, for one or several (replicas share it: see lease.py). Every call runs in one worker
thread, one transaction each, so the event loop never blocks and SQLite never sees two writers. A
failed transaction is rolled back and its exception re-raised to the caller (who retries: nothing was
acknowledged yet). Times are seconds since the epoch (float), except the lease's (the database's clock).
On PostgreSQL a session that sits idle inside a transaction for IDLE_IN_TRANSACTION_S is ended by the
server: a replica stopped mid-transaction (SIGSTOP, a frozen VM) would otherwise hold its row locks and
stall the others' transactions on those rows until it woke up. Replicas starting together migrate one
after the other (an advisory lock), the later ones finding nothing to do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

T = TypeVar("T")

IDLE_IN_TRANSACTION_S = 5  # PostgreSQL ends a session idle this long inside a transaction (its locks go)
MIGRATION_LOCK = 0x6D66_7175  # pg_advisory_xact_lock key of the queue's migrations ("mfqu")

# Recipient states. "queued": due now, waiting for the scheduler; "inflight": a job is out.
QUEUED, INFLIGHT, DEFERRED, HELD, DELIVERED, BOUNCED = "queued", "inflight", "deferred", "held", "delivered", "bounced"
STATES = (QUEUED, INFLIGHT, DEFERRED, HELD, DELIVERED, BOUNCED)
FINAL = (DELIVERED, BOUNCED)
ACTIVE = (QUEUED, INFLIGHT, DEFERRED, HELD)


class Base(DeclarativeBase):
    pass


# messages.message_id keeps this many characters (searched the same way): short enough for a PostgreSQL
# btree entry whatever the characters (at most 4 bytes each); real Message-IDs are far shorter.
MESSAGE_ID_CHARS = 255


class Message(Base):
    __tablename__ = "messages"

    queue_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    trace_id: Mapped[str] = mapped_column(sa.String(64), default="")
    mail_from: Mapped[str] = mapped_column(sa.String(512), default="")
    body_ref: Mapped[str] = mapped_column(sa.String(128))
    size: Mapped[int] = mapped_column(sa.Integer, default=0)
    received_at: Mapped[float] = mapped_column(sa.Float)
    envid: Mapped[str | None] = mapped_column(sa.String(256), nullable=True)
    ret: Mapped[str | None] = mapped_column(sa.String(8), nullable=True)
    body_8bit: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    smtputf8: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    client_ip: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    auth_user: Mapped[str | None] = mapped_column(sa.String(320), nullable=True)
    body_deleted: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    junk: Mapped[bool] = mapped_column(sa.Boolean, default=False)  # QueuedMessage.junk, for every job and retry
    requiretls: Mapped[bool] = mapped_column(sa.Boolean, default=False)  # QueuedMessage.requiretls (RFC 8689)
    message_id: Mapped[str] = mapped_column(sa.String(MESSAGE_ID_CHARS), default="", server_default="", index=True)  # the header's, for the admin search
    done_at: Mapped[float | None] = mapped_column(sa.Float, nullable=True, index=True)
    __table_args__ = (
        sa.Index("ix_messages_received_at", "received_at"),
        sa.Index("ix_messages_sender", sa.func.lower(mail_from)),  # the admin search's sender filter
    )


class Recipient(Base):
    __tablename__ = "recipients"
    __table_args__ = (
        sa.UniqueConstraint("queue_id", "address_key", name="uq_recipient"),
        sa.Index("ix_recipient_due", "state", "next_attempt_at"),
        sa.Index("ix_recipients_address_key", "address_key"),  # the admin search's recipient filter
        sa.Index("ix_recipients_state_queue", "state", "queue_id"),  # the admin list by state, counted
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    queue_id: Mapped[str] = mapped_column(sa.String(32), sa.ForeignKey("messages.queue_id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(sa.String(512))
    address_key: Mapped[str] = mapped_column(sa.String(512))  # lower case: the idempotency key's half
    notify: Mapped[str] = mapped_column(sa.String(64), default="")  # "FAILURE,DELAY"; "" = not given
    orcpt: Mapped[str | None] = mapped_column(sa.String(600), nullable=True)
    # the local alias an external target came from: its jobs are forwarded copies (ARC-sealed)
    forwarded_for: Mapped[str | None] = mapped_column(sa.String(320), nullable=True)
    state: Mapped[str] = mapped_column(sa.String(16))
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    next_attempt_at: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    last_status: Mapped[str] = mapped_column(sa.String(16), default="")
    last_error: Mapped[str] = mapped_column(sa.Text, default="")
    remote_mta: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    updated_at: Mapped[float] = mapped_column(sa.Float)
    delay_notified: Mapped[bool] = mapped_column(sa.Boolean, default=False)


class Body(Base):
    """The raw bytes of a message whose body came inline (body_ref "inline:..."), kept until the message
    is final and its DSNs are out, so retries and DSNs have it. Written in the intake transaction."""

    __tablename__ = "bodies"

    queue_id: Mapped[str] = mapped_column(sa.String(32), sa.ForeignKey("messages.queue_id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(sa.LargeBinary)


class Notice(Base):
    """A DSN to send: made in the transaction that decided it, sent afterwards (at least once;
    its queue id is fixed here, so a second send is a duplicate the intake drops)."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    queue_id: Mapped[str] = mapped_column(sa.String(32), index=True)  # the original message
    dsn_queue_id: Mapped[str] = mapped_column(sa.String(32), unique=True)
    kind: Mapped[str] = mapped_column(sa.String(16))  # failure|delay|success
    recipient_ids: Mapped[str] = mapped_column(sa.Text)  # JSON list of Recipient.id
    sent: Mapped[bool] = mapped_column(sa.Boolean, default=False, index=True)
    created_at: Mapped[float] = mapped_column(sa.Float)


class TlsCount(Base):
    """TLS-RPT (RFC 8460): sessions with a domain's MX on one UTC day, by policy, hosts and result
    (added up from DeliveryResult.tls in the results transaction; tlsrpt.py makes the report)."""

    __tablename__ = "tls_counts"
    __table_args__ = (sa.Index("ix_tls_counts_day", "day", "policy_domain"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    day: Mapped[str] = mapped_column(sa.String(10))  # YYYY-MM-DD, UTC
    policy_domain: Mapped[str] = mapped_column(sa.String(255))
    policy_type: Mapped[str] = mapped_column(sa.String(16))
    policy_string: Mapped[str] = mapped_column(sa.Text, default="")
    mx_host: Mapped[str] = mapped_column(sa.String(255), default="")
    # RFC 8460's sending-mta-ip, never filled (delivery does not say which of its addresses a session
    # left from): kept, always "", because migration 0006 made it NOT NULL and is released
    sending_ip: Mapped[str] = mapped_column(sa.String(64), default="")
    receiving_ip: Mapped[str] = mapped_column(sa.String(64), default="")
    result: Mapped[str] = mapped_column(sa.String(40))
    detail: Mapped[str] = mapped_column(sa.String(200), default="")
    sessions: Mapped[int] = mapped_column(sa.Integer, default=0)


class TlsDecision(Base):
    """A day's report for a domain, once decided: sent (to whom), or why not (no record, gave up)."""

    __tablename__ = "tls_reports"
    __table_args__ = (sa.UniqueConstraint("day", "policy_domain", name="uq_tls_report"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    day: Mapped[str] = mapped_column(sa.String(10))
    policy_domain: Mapped[str] = mapped_column(sa.String(255))
    outcome: Mapped[str] = mapped_column(sa.String(255))  # "sent to a@x, b@y" | "no record" | "gave up: ..."
    at: Mapped[float] = mapped_column(sa.Float)


class SchedulerLease(Base):
    """Which queue process runs the scheduler (lease.py): one row, taken when expired. `token` goes up
    by one at each change of holder: the fencing token of a term. Times are the database's clock."""

    __tablename__ = "scheduler_lease"

    name: Mapped[str] = mapped_column(sa.String(32), primary_key=True)  # "scheduler"
    holder: Mapped[str] = mapped_column(sa.String(200), default="")  # host/pid/random of the process
    token: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    expires_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


def make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    engine = sa.create_engine(url, pool_pre_ping=True, pool_size=4)

    @sa.event.listens_for(engine, "connect")
    def _session(dbapi_conn, _record):
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_S * 1000}")
        dbapi_conn.commit()

    return engine


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to the newest revision (Alembic, scripts inside this package); on PostgreSQL
    one process at a time (replicas starting together), in one transaction."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Database:
    """`await db.run(fn, *args)` runs `fn(session, *args)` in one transaction in the DB thread."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue-db")

    def call(self, fn: Callable[..., T], *args) -> T:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            return fn(session, *args)

    async def run(self, fn: Callable[..., T], *args) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.call, fn, *args)

    async def ping(self) -> bool:
        def q(s: Session) -> bool:
            return s.execute(sa.text("SELECT 1")).scalar() == 1

        return await self.run(q)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.engine.dispose()
