"""The store's tables (SQLAlchemy 2.0). The schema of record; Alembic migrations in `migrations/` create it.

Times are Unix seconds (BIGINT). Queries on the hot paths are plain SQL over these tables (see db.py);
this module is what the migrations and the schema test compare against.

- Ids of domains, users, aliases, mailboxes and blobs are never reused (SQLite: AUTOINCREMENT, migration
  0004; PostgreSQL: sequences): sessions, cached logins, events and listings name users and mailboxes by
  id, so a new user must never answer to a deleted one's id.
- domains, users (argon2 hash, quota, used bytes and message count kept up to date by every change;
  `generation` moves on at every password change and disable, and session tokens carry it; a
  `disabled` user cannot log in but still receives mail), aliases (address or "@domain" catch-all -> newline-separated targets), keywords (a user's IMAP
  keywords, each a bit 0..62 of messages.keywords).
- mailboxes: one row per mailbox and user; UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ live here and move
  only forward. first_recent_uid: messages from this UID on are \\Recent to the next session to claim them.
- messages: keyed by (mailbox_id, uid), so listing a mailbox is one range scan (SQLite: WITHOUT ROWID).
  flags holds the system flags as bits (\\Seen 1, \\Answered 2, \\Flagged 4, \\Deleted 8, \\Draft 16).
- expunged: tombstones (mailbox_id, modseq, uid) so changes() and QRESYNC VANISHED can answer; the newest
  `expunged_keep` per mailbox are kept, mailboxes.vanished_floor says up to which MODSEQ some may be gone.
- blobs: one row per distinct body (SHA-256), with the parsed structure (mailflow.mime JSON, zlib'd when
  that is smaller) and the locator of the bytes in the blob store; refs counts the messages using it;
  the sort_* columns hold what SORT and THREAD compare (sortkeys.py), NULL for bodies stored before
  migration 0012 until a SORT or THREAD computes them from `parsed` and writes them back.
- blob_bodies: the bodies themselves when they are kept in the database (MAILFLOW_STORE_BLOBS=postgres,
  blobs.PostgresBlobs; locator "pg:<id>"); empty with segment files. Migration 0006.
- pending_retrievals: delivered messages whose body nobody fetched yet (for the "retrieved" trace step).
- delivery_keys: idempotency keys of deliveries, per user; forgotten after delivery_key_days.
- pop3_locks: the RFC 1939 maildrop lock, one per user, with an expiry.
- dkim_keys: a domain's DKIM key sets (RSA 2048 and Ed25519, private keys as PKCS#8 PEM, public keys as
  the base64 of the DNS record), one per selector; state pending -> active (at most one per domain, the
  one delivery signs with) -> retired (still published for verifiers until removed). Migration 0005.
- sieve_scripts: a user's named Sieve scripts (the bytes as uploaded), at most one `active` (the one
  delivery runs); sieve_vacation: per user, the SHA-256 of (sender, handle) of each vacation reply sent,
  until it may be sent again (RFC 5230 :days). Migration 0009.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


NEVER_REUSED = {"sqlite_autoincrement": True}  # PostgreSQL's sequences never give an id twice anyway


class Domain(Base):
    __tablename__ = "domains"
    __table_args__ = (NEVER_REUSED,)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id"), index=True)
    address: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    scram_verifier: Mapped[str | None] = mapped_column(String(255))  # mailflow.scram.Verifier; migration 0007
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger)
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    messages: Mapped[int] = mapped_column(BigInteger, default=0)
    next_uidvalidity: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    generation: Mapped[int] = mapped_column(BigInteger, server_default="1")  # credential version, in tokens
    disabled: Mapped[bool] = mapped_column(Boolean, server_default=false())
    role: Mapped[str] = mapped_column(String(16), server_default="user")  # "user" | "admin" (web console)
    __table_args__ = (NEVER_REUSED,)


class Alias(Base):
    __tablename__ = "aliases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id"), index=True)
    address: Mapped[str] = mapped_column(String(254), unique=True)
    targets: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (NEVER_REUSED,)


class Keyword(Base):
    __tablename__ = "keywords"
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bit: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_keywords_user_name"),)


class Mailbox(Base):
    __tablename__ = "mailboxes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(1024))
    special_use: Mapped[str | None] = mapped_column(String(32))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uidnext: Mapped[int] = mapped_column(BigInteger, default=1)
    highestmodseq: Mapped[int] = mapped_column(BigInteger, default=1)
    first_recent_uid: Mapped[int] = mapped_column(BigInteger, default=1)
    selectable: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    # highest MODSEQ whose tombstones may be pruned (0: none ever were); see maintenance.purge_tombstones
    vanished_floor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_mailboxes_user_name"), NEVER_REUSED)


class Subscription(Base):
    __tablename__ = "subscriptions"
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(1024), primary_key=True)


class Blob(Base):
    __tablename__ = "blobs"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    sha256: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    locator: Mapped[str] = mapped_column(String(255))
    refs: Mapped[int] = mapped_column(Integer)
    parsed: Mapped[bytes] = mapped_column(LargeBinary)
    sent_day: Mapped[int | None] = mapped_column(Integer)  # date.toordinal() of the Date: header, in its zone
    # what SORT and THREAD compare (sortkeys.py; migration 0012): NULL sort_subject = not computed yet
    sort_subject: Mapped[str | None] = mapped_column(Text)
    sort_reply: Mapped[int | None] = mapped_column(Integer)
    sort_sent: Mapped[int | None] = mapped_column(BigInteger)
    sort_from: Mapped[str | None] = mapped_column(Text)
    sort_to: Mapped[str | None] = mapped_column(Text)
    sort_cc: Mapped[str | None] = mapped_column(Text)
    sort_display_from: Mapped[str | None] = mapped_column(Text)
    sort_display_to: Mapped[str | None] = mapped_column(Text)
    sort_message_id: Mapped[str | None] = mapped_column(Text)
    sort_parents: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (
        Index("ix_blobs_refs_zero", "refs", postgresql_where="refs <= 0", sqlite_where="refs <= 0"),
        NEVER_REUSED,
    )


class BlobBody(Base):
    __tablename__ = "blob_bodies"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    __table_args__ = (NEVER_REUSED,)


class Message(Base):
    __tablename__ = "messages"
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id"), primary_key=True)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    modseq: Mapped[int] = mapped_column(BigInteger)
    flags: Mapped[int] = mapped_column(Integer)
    keywords: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger)
    internal_date: Mapped[int] = mapped_column(BigInteger)
    blob_id: Mapped[int] = mapped_column(BigInteger)
    queue_id: Mapped[str | None] = mapped_column(String(64))
    saved_at: Mapped[int | None] = mapped_column(BigInteger)  # RFC 8514 save date; NULL before 0010
    __table_args__ = (Index("ix_messages_modseq", "mailbox_id", "modseq"), {"sqlite_with_rowid": False})


class Expunged(Base):
    __tablename__ = "expunged"
    mailbox_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    modseq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    __table_args__ = ({"sqlite_with_rowid": False},)


class PendingRetrieval(Base):
    __tablename__ = "pending_retrievals"
    mailbox_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    queue_id: Mapped[str] = mapped_column(String(64))
    trace_id: Mapped[str] = mapped_column(String(64))
    __table_args__ = ({"sqlite_with_rowid": False},)


class DeliveryKey(Base):
    __tablename__ = "delivery_keys"  # primary key (ikey, user_id): looked up by key (migration 0003)
    ikey: Mapped[str] = mapped_column(String(512), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[int] = mapped_column(BigInteger)  # no index (migration 0002): the purge scans
    __table_args__ = ({"sqlite_with_rowid": False},)


class Pop3Lock(Base):
    __tablename__ = "pop3_locks"
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str] = mapped_column(String(64))
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[int] = mapped_column(BigInteger)


class DkimKey(Base):
    __tablename__ = "dkim_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id"))
    selector: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(8))  # pending | active | retired
    rsa_private: Mapped[str] = mapped_column(Text)
    rsa_public: Mapped[str] = mapped_column(Text)
    ed25519_private: Mapped[str] = mapped_column(Text)
    ed25519_public: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    activated_at: Mapped[int | None] = mapped_column(BigInteger)
    __table_args__ = (UniqueConstraint("domain_id", "selector", name="uq_dkim_keys_domain_selector"), NEVER_REUSED)


class SieveScript(Base):
    __tablename__ = "sieve_scripts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(255))
    script: Mapped[bytes] = mapped_column(LargeBinary)
    active: Mapped[bool] = mapped_column(Boolean, server_default=false())
    updated_at: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_sieve_scripts_user_name"), NEVER_REUSED)


class SieveVacation(Base):
    __tablename__ = "sieve_vacation"
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vkey: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = ({"sqlite_with_rowid": False},)
