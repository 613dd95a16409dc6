"""users.role: "user" (every user so far) or "admin", who may log in to the web console's admin pages.

Set with `mailflow user role ADDRESS admin` (PUT /admin/users/{address}/role). A role is read by the web
console at each admin request; the mail protocols ignore it.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="user"))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("role")
