"""blob_bodies: message bodies kept in the database itself (MAILFLOW_STORE_BLOBS=postgres), so that every
store process reads and writes the same ones. On PostgreSQL the column is compressed with lz4 where the
server has it (faster than the default pglz, measured in tests/bench/measure_blobs.py); a server built
without lz4 keeps pglz. The table stays empty with segment files (and on SQLite).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

LZ4 = """
DO $$ BEGIN
    ALTER TABLE blob_bodies ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN NULL;
END $$
"""


def upgrade() -> None:
    op.create_table(
        "blob_bodies",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sqlite_autoincrement=True,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(LZ4)


def downgrade() -> None:
    op.drop_table("blob_bodies")
