"""The store's first schema: domains, users, aliases, keywords, mailboxes, subscriptions, blobs, messages,
expunge tombstones, pending retrievals, delivery keys, POP3 locks (see models.py for what each holds).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "domains",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(253), nullable=False, unique=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("domain_id", sa.Integer(), sa.ForeignKey("domains.id"), nullable=False),
        sa.Column("address", sa.String(254), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("quota_bytes", sa.BigInteger(), nullable=True),
        sa.Column("used_bytes", sa.BigInteger(), nullable=False),
        sa.Column("messages", sa.BigInteger(), nullable=False),
        sa.Column("next_uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_users_domain_id", "users", ["domain_id"])
    op.create_table(
        "aliases",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("domain_id", sa.Integer(), sa.ForeignKey("domains.id"), nullable=False),
        sa.Column("address", sa.String(254), nullable=False, unique=True),
        sa.Column("targets", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_aliases_domain_id", "aliases", ["domain_id"])
    op.create_table(
        "keywords",
        sa.Column("user_id", sa.Integer(), primary_key=True),
        sa.Column("bit", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.UniqueConstraint("user_id", "name", name="uq_keywords_user_name"),
    )
    op.create_table(
        "mailboxes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(1024), nullable=False),
        sa.Column("special_use", sa.String(32), nullable=True),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uidnext", sa.BigInteger(), nullable=False),
        sa.Column("highestmodseq", sa.BigInteger(), nullable=False),
        sa.Column("first_recent_uid", sa.BigInteger(), nullable=False),
        sa.Column("selectable", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("user_id", "name", name="uq_mailboxes_user_name"),
    )
    op.create_table(
        "subscriptions",
        sa.Column("user_id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(1024), primary_key=True),
    )
    op.create_table(
        "blobs",
        sa.Column("id", BIGID, primary_key=True),
        sa.Column("sha256", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("locator", sa.String(255), nullable=False),
        sa.Column("refs", sa.Integer(), nullable=False),
        sa.Column("parsed", sa.LargeBinary(), nullable=False),
        sa.Column("sent_day", sa.Integer(), nullable=True),
    )
    op.create_index(
        "ix_blobs_refs_zero",
        "blobs",
        ["refs"],
        postgresql_where=sa.text("refs <= 0"),
        sqlite_where=sa.text("refs <= 0"),
    )
    op.create_table(
        "messages",
        sa.Column("mailbox_id", sa.Integer(), sa.ForeignKey("mailboxes.id"), primary_key=True),
        sa.Column("uid", sa.BigInteger(), primary_key=True),
        sa.Column("modseq", sa.BigInteger(), nullable=False),
        sa.Column("flags", sa.Integer(), nullable=False),
        sa.Column("keywords", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("internal_date", sa.BigInteger(), nullable=False),
        sa.Column("blob_id", sa.BigInteger(), nullable=False),
        sa.Column("queue_id", sa.String(64), nullable=True),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_messages_modseq", "messages", ["mailbox_id", "modseq"])
    op.create_table(
        "expunged",
        sa.Column("mailbox_id", sa.Integer(), primary_key=True),
        sa.Column("modseq", sa.BigInteger(), primary_key=True),
        sa.Column("uid", sa.BigInteger(), primary_key=True),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "pending_retrievals",
        sa.Column("mailbox_id", sa.Integer(), primary_key=True),
        sa.Column("uid", sa.BigInteger(), primary_key=True),
        sa.Column("queue_id", sa.String(64), nullable=False),
        sa.Column("trace_id", sa.String(64), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "delivery_keys",
        sa.Column("user_id", sa.Integer(), primary_key=True),
        sa.Column("ikey", sa.String(512), primary_key=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_delivery_keys_created_at", "delivery_keys", ["created_at"])
    op.create_table(
        "pop3_locks",
        sa.Column("user_id", sa.Integer(), primary_key=True),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "pop3_locks", "delivery_keys", "pending_retrievals", "expunged", "messages", "blobs",
        "subscriptions", "mailboxes", "keywords", "aliases", "users", "domains",
    ):  # fmt: skip
        op.drop_table(table)
