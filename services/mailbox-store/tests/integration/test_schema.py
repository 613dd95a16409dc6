"""The migrations build exactly the tables models.py declares (on SQLite and PostgreSQL), and running
them again at the next start changes nothing."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from mailflow_mailbox_store.blobs import SegmentBlobs
from mailflow_mailbox_store.db import Database
from mailflow_mailbox_store.models import Base


def test_migrations_match_the_models(tmp_path, db_url):
    db = Database(db_url, SegmentBlobs(tmp_path / "blobs"))
    db.migrate()
    db.migrate()  # a second start: nothing to do
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    engine.dispose()
    db.close()
    assert diff == []
    assert version == "0004"
