"""Ids are never reused, and users get a credential generation and a disabled state.

SQLite gives a deleted row's rowid to the next insert when it was the largest (a deleted user's id went
to the next new user, whose mail then reached the old user's sessions and cached logins). With
AUTOINCREMENT it never does. SQLite cannot add AUTOINCREMENT to a table, so domains, users, aliases,
mailboxes and blobs are rebuilt the way sqlite.org/lang_altertable.html says (create the new table,
copy every row with its id, drop the old one, rename; foreign keys are off meanwhile, see
db._sqlite_migration_connect, and checked before COMMIT). The copied ids seed the counter, so an id
deleted *before* this migration can still come back once; every session token is refused after it
anyway (new token format, new key). PostgreSQL's sequences never hand out an id twice: only the
two columns are added there.

users.generation moves on at every password change and disable; session tokens carry it and the store
compares it on every access call. users.disabled: the user cannot log in, mail is still delivered.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _domains(name: str) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(253), nullable=False, unique=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sqlite_autoincrement=True,
    )


def _users(name: str) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("domain_id", sa.Integer(), sa.ForeignKey("domains.id"), nullable=False),
        sa.Column("address", sa.String(254), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("quota_bytes", sa.BigInteger(), nullable=True),
        sa.Column("used_bytes", sa.BigInteger(), nullable=False),
        sa.Column("messages", sa.BigInteger(), nullable=False),
        sa.Column("next_uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False, server_default="1"),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sqlite_autoincrement=True,
    )


def _aliases(name: str) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("domain_id", sa.Integer(), sa.ForeignKey("domains.id"), nullable=False),
        sa.Column("address", sa.String(254), nullable=False, unique=True),
        sa.Column("targets", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sqlite_autoincrement=True,
    )


def _mailboxes(name: str) -> None:
    op.create_table(
        name,
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
        sqlite_autoincrement=True,
    )


def _blobs(name: str) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), primary_key=True),  # SQLite only: INTEGER is its 64-bit rowid
        sa.Column("sha256", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("locator", sa.String(255), nullable=False),
        sa.Column("refs", sa.Integer(), nullable=False),
        sa.Column("parsed", sa.LargeBinary(), nullable=False),
        sa.Column("sent_day", sa.Integer(), nullable=True),
        sqlite_autoincrement=True,
    )


def _indexes() -> None:
    op.create_index("ix_users_domain_id", "users", ["domain_id"])
    op.create_index("ix_aliases_domain_id", "aliases", ["domain_id"])
    op.create_index("ix_blobs_refs_zero", "blobs", ["refs"], sqlite_where=sa.text("refs <= 0"))


# table -> (its definition, the columns copied from the old table)
TABLES = {
    "domains": (_domains, "id, name, created_at"),
    "users": (
        _users,
        "id, domain_id, address, password_hash, quota_bytes, used_bytes, messages, next_uidvalidity, created_at",
    ),
    "aliases": (_aliases, "id, domain_id, address, targets, created_at"),
    "mailboxes": (
        _mailboxes,
        "id, user_id, name, special_use, uidvalidity, uidnext, highestmodseq, first_recent_uid, selectable,"
        " created_at",
    ),
    "blobs": (_blobs, "id, sha256, size, locator, refs, parsed, sent_day"),
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        op.add_column("users", sa.Column("generation", sa.BigInteger(), nullable=False, server_default="1"))
        op.add_column("users", sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()))
        return
    for table, (create, columns) in TABLES.items():
        create(f"{table}_new")
        op.execute(f"INSERT INTO {table}_new ({columns}) SELECT {columns} FROM {table}")
        op.drop_table(table)
        op.rename_table(f"{table}_new", table)
    _indexes()
    broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"rebuilding the tables broke foreign keys: {broken[:5]}")


def downgrade() -> None:
    op.drop_column("users", "disabled")
    op.drop_column("users", "generation")
