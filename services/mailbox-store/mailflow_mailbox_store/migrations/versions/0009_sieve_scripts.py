"""sieve_scripts: each user's named Sieve scripts (RFC 5228), at most one of them active (ManageSieve,
RFC 5804, uploads them; delivery runs the active one). sieve_vacation: the vacation replies sent (RFC
5230 :days), one row per user and (sender, handle) digest until it expires.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sieve_scripts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("script", sa.LargeBinary(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("user_id", "name", name="uq_sieve_scripts_user_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "sieve_vacation",
        sa.Column("user_id", sa.Integer(), primary_key=True),
        sa.Column("vkey", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("sieve_vacation")
    op.drop_table("sieve_scripts")
