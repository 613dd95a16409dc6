"""tls_counts and tls_reports: TLS-RPT (RFC 8460) sessions per day and domain, and the reports made of them

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tls_counts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("policy_domain", sa.String(255), nullable=False),
        sa.Column("policy_type", sa.String(16), nullable=False),
        sa.Column("policy_string", sa.Text, nullable=False),
        sa.Column("mx_host", sa.String(255), nullable=False),
        sa.Column("sending_ip", sa.String(64), nullable=False),
        sa.Column("receiving_ip", sa.String(64), nullable=False),
        sa.Column("result", sa.String(40), nullable=False),
        sa.Column("detail", sa.String(200), nullable=False),
        sa.Column("sessions", sa.Integer, nullable=False),
    )
    op.create_index("ix_tls_counts_day", "tls_counts", ["day", "policy_domain"])
    op.create_table(
        "tls_reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("policy_domain", sa.String(255), nullable=False),
        sa.Column("outcome", sa.String(255), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.UniqueConstraint("day", "policy_domain", name="uq_tls_report"),
    )


def downgrade() -> None:
    op.drop_table("tls_reports")
    op.drop_index("ix_tls_counts_day", table_name="tls_counts")
    op.drop_table("tls_counts")
