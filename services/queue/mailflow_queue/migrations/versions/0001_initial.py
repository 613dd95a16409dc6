"""messages, recipients, notices

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("queue_id", sa.String(32), primary_key=True),
        sa.Column("trace_id", sa.String(64), nullable=False),
        sa.Column("mail_from", sa.String(512), nullable=False),
        sa.Column("body_ref", sa.String(128), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("envid", sa.String(256), nullable=True),
        sa.Column("ret", sa.String(8), nullable=True),
        sa.Column("body_8bit", sa.Boolean, nullable=False),
        sa.Column("smtputf8", sa.Boolean, nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.Column("auth_user", sa.String(320), nullable=True),
        sa.Column("body_deleted", sa.Boolean, nullable=False),
        sa.Column("done_at", sa.Float, nullable=True),
    )
    op.create_index("ix_messages_done_at", "messages", ["done_at"])
    op.create_table(
        "recipients",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("queue_id", sa.String(32), sa.ForeignKey("messages.queue_id", ondelete="CASCADE"), nullable=False),
        sa.Column("address", sa.String(512), nullable=False),
        sa.Column("address_key", sa.String(512), nullable=False),
        sa.Column("notify", sa.String(64), nullable=False),
        sa.Column("orcpt", sa.String(600), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=True),
        sa.Column("last_status", sa.String(16), nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("remote_mta", sa.String(255), nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("delay_notified", sa.Boolean, nullable=False),
        sa.UniqueConstraint("queue_id", "address_key", name="uq_recipient"),
    )
    op.create_index("ix_recipient_due", "recipients", ["state", "next_attempt_at"])
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("queue_id", sa.String(32), nullable=False),
        sa.Column("dsn_queue_id", sa.String(32), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("recipient_ids", sa.Text, nullable=False),
        sa.Column("sent", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_notices_queue_id", "notices", ["queue_id"])
    op.create_index("ix_notices_sent", "notices", ["sent"])


def downgrade() -> None:
    op.drop_table("notices")
    op.drop_table("recipients")
    op.drop_table("messages")
