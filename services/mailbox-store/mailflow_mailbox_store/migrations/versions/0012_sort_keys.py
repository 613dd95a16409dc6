"""blobs.sort_*: what SORT and THREAD (RFC 5256) compare, computed once when a body is stored
(sortkeys.py). Bodies stored before stay NULL here; the first SORT or THREAD that meets one computes its
keys from the stored parse and writes them back (sorting.py), so nothing is read twice and a large store
needs no long migration.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

COLUMNS = (
    ("sort_subject", sa.Text()),
    ("sort_reply", sa.Integer()),
    ("sort_sent", sa.BigInteger()),
    ("sort_from", sa.Text()),
    ("sort_to", sa.Text()),
    ("sort_cc", sa.Text()),
    ("sort_display_from", sa.Text()),
    ("sort_display_to", sa.Text()),
    ("sort_message_id", sa.Text()),
    ("sort_parents", sa.Text()),
)


def upgrade() -> None:
    for name, kind in COLUMNS:  # ALTER TABLE ADD COLUMN on both: no copy of the table
        op.add_column("blobs", sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
