"""scram_verifier: each user's SCRAM-SHA-256 verifier (RFC 5802 §3: salt, iteration count, StoredKey,
ServerKey, in mailflow.scram.Verifier's text form), beside the argon2id hash. Null until the store
learns the password again: at a password change, or at the user's next PLAIN/LOGIN/USER-PASS login;
until then SCRAM fails for that user like a wrong password. It never leaves the store.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("scram_verifier", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("scram_verifier")
