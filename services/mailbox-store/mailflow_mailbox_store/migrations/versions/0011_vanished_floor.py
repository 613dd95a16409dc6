"""mailboxes.vanished_floor: the highest MODSEQ whose expunge tombstones (table `expunged`) may have been
pruned (maintenance keeps the newest `expunged_keep` per mailbox). Tombstones above it are complete, so
"which UIDs vanished since MODSEQ X" (QRESYNC, RFC 7162 §3.2.5/§3.2.6) is exact for X >= the floor; below
it the answer must fall back to "every known UID not present". 0 on existing rows: nothing was ever
pruned before this revision, so every tombstone ever written is still there.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "mailboxes", sa.Column("vanished_floor", sa.BigInteger(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    with op.batch_alter_table("mailboxes") as batch:
        batch.drop_column("vanished_floor")
