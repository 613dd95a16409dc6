"""messages.saved_at: when the message came into its mailbox (RFC 8514 save date, Unix seconds). Rows
stored before this revision keep NULL: FETCH SAVEDATE answers NIL for them and SAVEDBEFORE, SAVEDON and
SAVEDSINCE match none of them, as RFC 8514 §3 allows for a save date the server does not know.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("saved_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("saved_at")
