"""delivery_keys keyed by (ikey, user_id) instead of (user_id, ikey): the key is what is looked up
(many keys of one user at once), and with the user first PostgreSQL may read every key of that user.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _table(name: str, first: str, second: str) -> None:
    op.create_table(
        name,
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("ikey", sa.String(512), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(first, second, name=f"pk_{name}"),
        sqlite_with_rowid=False,
    )


def _rekey(first: str, second: str) -> None:
    _table("delivery_keys_new", first, second)
    op.execute(
        "INSERT INTO delivery_keys_new (user_id, ikey, created_at) SELECT user_id, ikey, created_at FROM delivery_keys"
    )
    op.drop_table("delivery_keys")
    op.rename_table("delivery_keys_new", "delivery_keys")


def upgrade() -> None:
    _rekey("ikey", "user_id")


def downgrade() -> None:
    _rekey("user_id", "ikey")
