"""Test setup only: a queue history of 100,000 finished messages and 1,000 users, written straight into
the stack's SQLite databases (as the brief allows for seeding), so the console's pages are timed against
that much data. The rows are what the services would have written: delivered messages with their
recipients; users with the password hash of an existing user and no mail.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def queue_history(db: Path, messages: int = 100_000) -> None:
    """Over the last 23 hours: the queue keeps finished messages a day (retain_done_s), so none is purged
    while the test runs."""
    now = time.time()
    con = sqlite3.connect(db, timeout=30)
    try:
        with con:
            con.executemany(
                "INSERT INTO messages (queue_id, trace_id, mail_from, body_ref, size, received_at, body_8bit,"
                " smtputf8, body_deleted, junk, requiretls, done_at) VALUES (?, ?, ?, ?, ?, ?, 0, 0, 1, 0, 0, ?)",
                (
                    (f"SEED{i:07d}", f"t{i}", f"sender{i % 500}@elsewhere.test", "deleted", 2048,
                     now - 82_000 + i * 0.8, now - 82_000 + i * 0.8 + 1)
                    for i in range(messages)
                ),
            )  # fmt: skip
            con.executemany(
                "INSERT INTO recipients (queue_id, address, address_key, notify, state, attempts, last_status,"
                " last_error, updated_at, delay_notified) VALUES (?, ?, ?, '', 'delivered', 1, '2.0.0', '', ?, 0)",
                ((f"SEED{i:07d}", f"user{i % 1000}@example.test", f"user{i % 1000}@example.test", now) for i in range(messages)),
            )
    finally:
        con.close()


def users(db: Path, domain: str, like: str, count: int = 1_000) -> None:
    con = sqlite3.connect(db, timeout=30)
    try:
        with con:
            domain_id, = con.execute("SELECT id FROM domains WHERE name = ?", (domain,)).fetchone()
            password_hash, = con.execute("SELECT password_hash FROM users WHERE address = ?", (like,)).fetchone()
            now = int(time.time())
            con.executemany(
                "INSERT INTO users (domain_id, address, password_hash, quota_bytes, used_bytes, messages,"
                " next_uidvalidity, created_at, generation, disabled, role) VALUES (?, ?, ?, NULL, 0, 0, ?, ?, 1, 0, 'user')",
                ((domain_id, f"user{i}@{domain}", password_hash, now, now) for i in range(count)),
            )
    finally:
        con.close()
