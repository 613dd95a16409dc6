"""dkim_keys: each domain's DKIM key sets (RSA 2048 and Ed25519 per selector), pending, active or retired.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dkim_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("domain_id", sa.Integer(), sa.ForeignKey("domains.id"), nullable=False),
        sa.Column("selector", sa.String(40), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("rsa_private", sa.Text(), nullable=False),
        sa.Column("rsa_public", sa.Text(), nullable=False),
        sa.Column("ed25519_private", sa.Text(), nullable=False),
        sa.Column("ed25519_public", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("activated_at", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("domain_id", "selector", name="uq_dkim_keys_domain_selector"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("dkim_keys")
