"""Drop the index on delivery_keys.created_at: it cost every delivery ~30 bytes to speed up a clean-up
that runs every few minutes (a scan of the keys serves it well enough).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_delivery_keys_created_at", table_name="delivery_keys")


def downgrade() -> None:
    op.create_index("ix_delivery_keys_created_at", "delivery_keys", ["created_at"])
