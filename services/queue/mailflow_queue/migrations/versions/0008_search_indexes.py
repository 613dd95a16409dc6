"""messages.message_id (the header's, which smtp-ingress now reads; "" for messages from before) and
indexes for the admin search (GET /queue filters, the web console): messages by arrival and by sender
(lower case, as the filter compares), recipients by address and by state (the list by state, counted
without reading the rows).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("message_id", sa.String(255), nullable=False, server_default=""))
    op.create_index("ix_messages_message_id", "messages", ["message_id"])
    op.create_index("ix_messages_received_at", "messages", ["received_at"])
    op.create_index("ix_messages_sender", "messages", [sa.text("lower(mail_from)")])
    op.create_index("ix_recipients_address_key", "recipients", ["address_key"])
    op.create_index("ix_recipients_state_queue", "recipients", ["state", "queue_id"])


def downgrade() -> None:
    op.drop_index("ix_recipients_state_queue", "recipients")
    op.drop_index("ix_recipients_address_key", "recipients")
    op.drop_index("ix_messages_sender", "messages")
    op.drop_index("ix_messages_received_at", "messages")
    op.drop_index("ix_messages_message_id", "messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("message_id")
