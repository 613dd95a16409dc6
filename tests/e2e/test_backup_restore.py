"""Backup and restore of the store with its bodies in PostgreSQL (issue 16 §6; deploy/README.md, "Backups
and restore"): one `pg_dump` of the store's database holds users, mailboxes and the bodies together.

A stack whose store keeps bodies in PostgreSQL (MAILFLOW_STORE_BLOBS=postgres) takes mail of several
sizes (a body over NATS's chunk size among them); the store's schema is dumped with `pg_dump -Fc` while
the stack runs; the store is stopped, the schema wiped and restored with `pg_restore`; the store starts
again and IMAP reads every message, byte for byte, with its flags, and takes new mail.
"""

from __future__ import annotations

import imaplib
import shutil
import smtplib
import subprocess
from urllib.parse import unquote, urlparse

import pytest
import sqlalchemy as sa

from mailflow.stack import Ports, Stack
from tests.support import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

USER = "rita@restore.test"
SIZES = (200, 40_000, 1_500_000)


def libpq(url: str) -> tuple[str, str]:
    """The plain libpq URL of a SQLAlchemy one, and the schema its search_path option names."""
    schema = unquote(url.split("options=", 1)[1]).split("search_path=", 1)[1]
    u = urlparse(url.split("?", 1)[0])
    return f"postgresql://{u.netloc}{u.path}", schema


def message(i: int, size: int) -> bytes:
    line = f"line of message {i} ".ljust(76, "x").encode() + b"\r\n"
    return f"From: a@x.test\r\nTo: {USER}\r\nSubject: m{i}\r\n\r\n".encode() + line * (size // len(line) + 1)


def mailbox(st: Stack) -> dict[bytes, tuple[bytes, bytes]]:
    """{Subject: (flags, whole message)} of the user's INBOX."""
    with imaplib.IMAP4(st.ports.host, st.ports.imap, timeout=30) as m:
        m.login(USER, "pw")
        m.select("INBOX", readonly=True)
        _, data = m.fetch("1:*", "(FLAGS BODY.PEEK[])")
        out = {}
        for part in data:
            if isinstance(part, tuple):
                raw = part[1]
                subject = raw.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0]
                out[subject] = (part[0].split(b"FLAGS (", 1)[1].split(b")", 1)[0], raw)
        return out


@pytest.fixture
def store_db(pg_url):
    if not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        pytest.skip("pg_dump/pg_restore (postgresql-client) not installed")
    return pg_url


def test_pg_dump_wipe_pg_restore_and_every_message_reads_back(tmp_path, store_db):
    env = {"MAILFLOW_STORE_DATABASE_URL": store_db, "MAILFLOW_STORE_BLOBS": "postgres"}
    dsn, schema = libpq(store_db)
    with Stack(tmp_path, Ports.free(), env=env) as st:
        st.cli("domain", "add", "restore.test")
        st.cli("user", "add", USER, "--password", "pw")
        with smtplib.SMTP(st.ports.host, st.ports.smtp, timeout=60) as s:
            for i, size in enumerate(SIZES):
                s.sendmail("a@x.test", [USER], message(i, size))
        wait_for(lambda: len(mailbox(st)) == len(SIZES), timeout=60, what="every message stored")
        with imaplib.IMAP4(st.ports.host, st.ports.imap, timeout=30) as m:
            m.login(USER, "pw")
            m.select("INBOX")
            m.store("2", "+FLAGS", "(\\Flagged)")
        before = mailbox(st)
        sent = {f"m{i}".encode(): message(i, n) for i, n in enumerate(SIZES)}
        assert before.keys() == sent.keys()
        assert all(before[k][1].endswith(sent[k]) for k in sent), "each stored as sent, under our Received: line"

        dump = tmp_path / "store.dump"
        subprocess.run(["pg_dump", "-Fc", "-n", schema, "-f", str(dump), dsn], check=True, timeout=120)

        st.stop_service("mailbox-store")
        engine = sa.create_engine(store_db)
        with engine.begin() as conn:  # the disaster: the schema and everything in it gone
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
        subprocess.run(["pg_restore", "-d", dsn, str(dump)], check=True, timeout=120)
        st.start_service("mailbox-store")

        assert mailbox(st) == before
        with smtplib.SMTP(st.ports.host, st.ports.smtp, timeout=60) as s:
            s.sendmail("a@x.test", [USER], message(9, 1000))
        wait_for(lambda: b"m9" in mailbox(st), timeout=60, what="new mail after the restore")
