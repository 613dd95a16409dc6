"""The migrations build exactly the tables models.py declares (on SQLite and PostgreSQL), running them
again at the next start changes nothing, and migration 0004 keeps every row of a populated database."""

from __future__ import annotations

import asyncio

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
    assert version == "0012"


TABLES = ("domains", "users", "aliases", "keywords", "mailboxes", "subscriptions", "blobs", "messages")


def _populate_0003(conn) -> None:
    """What a store at revision 0003 holds: two domains, three users (one deleted since), their
    mailboxes, aliases, keywords, subscriptions, shared bodies and messages."""
    sql = conn.exec_driver_sql
    sql("INSERT INTO domains (id, name, created_at) VALUES (1, 'a.test', 1), (2, 'b.test', 2)")
    for uid, addr, dom in ((1, "ann@a.test", 1), (2, "bob@a.test", 1), (4, "cy@b.test", 2)):
        sql(
            "INSERT INTO users (id, domain_id, address, password_hash, quota_bytes, used_bytes, messages,"
            f" next_uidvalidity, created_at) VALUES ({uid}, {dom}, '{addr}', 'h{uid}', NULL, 10, 1, 100, 5)"
        )
        for n, name in enumerate(("INBOX", "Sent")):
            sql(
                "INSERT INTO mailboxes (id, user_id, name, special_use, uidvalidity, uidnext, highestmodseq,"
                f" first_recent_uid, selectable, created_at) VALUES ({uid * 10 + n}, {uid}, '{name}', NULL,"
                f" 100, 3, 4, 1, {sa.true().compile(dialect=conn.dialect)}, 5)"
            )
        sql(f"INSERT INTO keywords (user_id, bit, name) VALUES ({uid}, 0, '$Label{uid}')")
        sql(f"INSERT INTO subscriptions (user_id, name) VALUES ({uid}, 'Sent')")
    sql("INSERT INTO aliases (id, domain_id, address, targets, created_at) VALUES (3, 1, 'team@a.test', 'ann@a.test', 7)")
    for bid in (1, 2):
        conn.execute(
            sa.text(
                "INSERT INTO blobs (id, sha256, size, locator, refs, parsed, sent_day)"
                " VALUES (:i, :s, 5, :l, 2, :p, NULL)"
            ),
            {"i": bid, "s": bytes([bid]) * 32, "l": f"seg/{bid}", "p": b"{}"},
        )
    for mid, blob in ((10, 1), (20, 1), (40, 2), (41, 2)):
        sql(
            "INSERT INTO messages (mailbox_id, uid, modseq, flags, keywords, size, internal_date, blob_id,"
            f" queue_id) VALUES ({mid}, 2, 3, 1, 1, 5, 9, {blob}, 'Q{mid}')"
        )
    if conn.dialect.name == "postgresql":  # the ids came from the sequences in real life
        for t in ("domains", "users", "aliases", "mailboxes", "blobs"):
            sql(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {t}))")


def _contents(conn) -> dict[str, list[tuple]]:
    out = {}
    for t in TABLES:
        cols = [c for c in sa.inspect(conn).get_columns(t) if c["name"] not in ("generation", "disabled", "scram_verifier")]
        names = ", ".join(c["name"] for c in cols)
        out[t] = sorted(tuple(r) for r in conn.exec_driver_sql(f"SELECT {names} FROM {t}"))
    return out


def test_migration_0004_keeps_every_row_and_ids_are_never_reused_after_it(tmp_path, db_url):
    db = Database(db_url, SegmentBlobs(tmp_path / "blobs"))
    db.migrate("0003")
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        _populate_0003(conn)
        conn.exec_driver_sql("INSERT INTO expunged (mailbox_id, modseq, uid) VALUES (10, 3, 1), (20, 2, 1)")
        before = _contents(conn)
    db.migrate("0006")
    with engine.connect() as conn:
        assert _contents(conn) == before
    db.migrate()  # 0007, 0008: no verifier yet, every user so far a plain user; 0011: no tombstone pruned yet
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT DISTINCT generation, disabled, role FROM users").fetchall() == [(1, False, "user")]
        assert conn.exec_driver_sql("SELECT DISTINCT vanished_floor FROM mailboxes").fetchall() == [(0,)]
        assert conn.exec_driver_sql("SELECT mailbox_id, modseq, uid FROM expunged ORDER BY 1").fetchall() == [
            (10, 3, 1),
            (20, 2, 1),
        ]
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        if conn.dialect.name == "sqlite":
            ddl = dict(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
            for table in ("domains", "users", "aliases", "mailboxes", "blobs"):
                assert "AUTOINCREMENT" in ddl[table], table
            assert "REFERENCES users" in ddl["mailboxes"] and "REFERENCES mailboxes" in ddl["messages"]
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
            index = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'ix_blobs_refs_zero'").scalar()
            assert "refs <= 0" in index
    assert diff == []
    # The newest user goes; the next one gets a new id, not 4 again (nor 3, the id a user lost before
    # the migration could not be known: see migration 0004).
    db.start()
    from mailflow_mailbox_store import admin

    async def cycle() -> int:
        await db.write(admin.delete_user, "cy@b.test")
        await db.write(admin.create_user, "dee@b.test", "h", None, None)
        return await db.read(lambda tx: tx.value("SELECT id FROM users WHERE address = 'dee@b.test'"))

    try:
        assert asyncio.run(cycle()) > 4
    finally:
        db.close()
        engine.dispose()
