"""Sieve at local delivery, through the real delivery code (Deliveries + SieveFilter) and the real
mailbox-store: scripts uploaded through the store's API file messages into folders with flags, make
folders with :create, keep copies, discard; a broken script keeps the mail in INBOX and says why; a
script the store cannot give defers the job; an alias reaching two users runs each user's own script."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailflow.contracts.messages import DeliveryJob, Recipient
from mailflow.errors import ServiceUnavailable
from mailflow_delivery.routing import Deliveries
from mailflow_delivery.sieve import SieveFilter
from tests.support.doubles import MemoryBodies, MemorySentLog
from tests.support.store import TestStore

FILTER = b"""require ["fileinto", "imap4flags", "copy", "mailbox"];
if header :contains "subject" "report" {
  addflag "\\\\Flagged";
  fileinto :flags ["\\\\Seen", "$Report"] "Reports";
  stop;
}
if address :domain :is "from" "lists.example" {
  fileinto :create "Lists/Example";
}
if header :is "x-copy" "yes" {
  addflag "$Copied";
  fileinto :copy "Archive";
}
if header :is "x-spam" "yes" {
  discard;
}
"""


def message(subject: str, sender: str = "carol@elsewhere.test", extra: str = "") -> bytes:
    return f"From: {sender}\r\nTo: a@daum.test\r\nSubject: {subject}\r\n{extra}\r\nHello.\r\n".encode()


class NoScripts(TestStore):
    async def active_script(self, login):
        raise ServiceUnavailable("store down")


@pytest.fixture
async def world(store):
    store.add_domain("daum.test")
    for user in ("a@daum.test", "b@daum.test"):
        store.add_user(user, "pw")
    store.add_alias("team@daum.test", ["a@daum.test", "b@daum.test"])
    a = await store.authenticate("a@daum.test", "pw")
    await store.put_script(a, "main", FILTER)
    await store.set_active(a, "main")
    for box in ("Reports",):  # Archive is a default mailbox
        await store.create_mailbox(a, box)
    bodies = MemoryBodies()
    d = Deliveries(store, store, bodies, None, MemorySentLog(), sieve=SieveFilter(store, store, ttl=0))
    return store, a, bodies, d


async def deliver(bodies, d, qid: str, raw: bytes, rcpts=("a@daum.test",), mail_from="carol@elsewhere.test"):
    ref = await bodies.put(qid, raw)
    jobs = [
        DeliveryJob(queue_id=qid, trace_id="t-" + qid, attempt=1, mail_from=mail_from, rcpt=Recipient(address=r), body_ref=ref, size=len(raw), received_at=datetime.now(UTC))
        for r in rcpts
    ]
    results, _ = await d.run(jobs)
    return [(r.rcpt, r.outcome, r.diagnostic) for r in results], jobs


async def flags_in(store, p, mailbox: str) -> list[set[str]]:
    return [set(f) for f in (await store.select(p, mailbox)).flags]


async def test_fileinto_files_with_flags_and_other_mail_stays_in_inbox(world):
    store, a, bodies, d = world
    res, _ = await deliver(bodies, d, "Q1", message("Weekly report"))
    assert res == [("a@daum.test", "delivered", "250 2.0.0 stored in mailbox")]
    res, _ = await deliver(bodies, d, "Q2", message("lunch?"))
    assert res[0][1] == "delivered"
    assert [m.endswith(message("Weekly report")) for m in store.messages("a@daum.test", "Reports")] == [True]
    assert await flags_in(store, a, "Reports") == [{"\\Seen", "$Report"}]  # :flags, not the internal ones
    assert [m.endswith(message("lunch?")) for m in store.messages("a@daum.test")] == [True]
    assert await flags_in(store, a, "INBOX") == [set()]


async def test_create_copy_discard_and_a_retry_stores_nothing_twice(world):
    store, a, bodies, d = world
    res, _ = await deliver(bodies, d, "Q3", message("news", sender="bot@lists.example"))
    assert res[0][1] == "delivered"
    assert len(store.messages("a@daum.test", "Lists/Example")) == 1  # made by :create
    assert "Lists/Example" in [m.name for m in await store.list_mailboxes(a)]
    res, jobs = await deliver(bodies, d, "Q4", message("keep two", extra="X-Copy: yes\r\n"))
    assert res[0][1] == "delivered"
    assert await flags_in(store, a, "Archive") == [{"$Copied"}]
    assert await flags_in(store, a, "INBOX") == [{"$Copied"}]  # the implicit keep takes the internal flags
    again, _ = await d.run(jobs)  # the job redelivered: every copy is a duplicate
    assert again[0].outcome == "delivered"
    assert len(store.messages("a@daum.test", "Archive")) == 1 and len(store.messages("a@daum.test")) == 1
    res, _ = await deliver(bodies, d, "Q5", message("spam", extra="X-Spam: yes\r\n"))
    assert res == [("a@daum.test", "delivered", "250 2.0.0 discarded by the recipient's Sieve script")]
    assert len(store.messages("a@daum.test")) == 1  # nothing more anywhere
    assert len(store.messages("a@daum.test", None)) == 3


async def test_fileinto_a_missing_mailbox_without_create_keeps_in_inbox(world):
    store, a, bodies, d = world
    await store.delete_mailbox(a, "Reports")
    res, _ = await deliver(bodies, d, "Q9", message("Weekly report"))
    assert res[0][1] == "delivered"
    assert await flags_in(store, a, "INBOX") == [{"\\Seen", "$Report"}]  # RFC 5228 §4.1: kept instead
    assert "Reports" not in [m.name for m in await store.list_mailboxes(a)]


async def test_a_broken_script_keeps_mail_in_inbox_and_says_why(world):
    store, a, bodies, d = world
    await store.put_script(a, "broken", b'require "fileinto";\nif header :is "subject" "x" {\n  fileinto "X";\n')
    await store.set_active(a, "broken")  # stored without ManageSieve's check, as an old version might have
    res, _ = await deliver(bodies, d, "Q6", message("x"))
    assert res[0][1] == "delivered"
    (body,) = store.messages("a@daum.test")
    assert body.startswith(b"Return-Path: <carol@elsewhere.test>\r\nX-Mailflow-Sieve-Error: script \"broken\" failed (line 4:")
    assert body.endswith(message("x"))
    assert store.messages("a@daum.test", "X") == []


async def test_an_alias_runs_each_users_own_script(world):
    store, a, bodies, d = world
    res, _ = await deliver(bodies, d, "Q7", message("Monthly report"), rcpts=("team@daum.test",))
    assert res[0][1] == "delivered"
    assert len(store.messages("a@daum.test", "Reports")) == 1 and store.messages("a@daum.test") == []
    assert len(store.messages("b@daum.test")) == 1  # b has no script: INBOX


async def test_a_script_the_store_cannot_give_defers_the_job(world):
    store, _, bodies, _ = world
    down = NoScripts(store.local)
    d = Deliveries(down, down, bodies, None, MemorySentLog(), sieve=SieveFilter(down, down, ttl=0))
    res, _ = await deliver(bodies, d, "Q8", message("Weekly report"))
    assert res == [("a@daum.test", "deferred", "451 4.3.0 recipient's Sieve script unavailable, will retry")]
    assert store.messages("a@daum.test", None) == []


async def test_an_included_script_of_the_user_runs(world):
    store, a, bodies, d = world
    await store.put_script(a, "reports", b'require ["fileinto"]; if header :contains "subject" "q3" { fileinto "Reports"; }')
    await store.put_script(a, "top", b'require ["include", "imap4flags"]; addflag "$Top"; include "reports";')
    await store.set_active(a, "top")
    res, _ = await deliver(bodies, d, "Q10", message("Q3 numbers"))
    assert res[0][1] == "delivered"
    assert await flags_in(store, a, "Reports") == [{"$Top"}]
    await store.put_script(a, "top", b'require "include"; include "missing";')
    res, _ = await deliver(bodies, d, "Q11", message("Q3 again"))
    (body,) = store.messages("a@daum.test")
    assert b"X-Mailflow-Sieve-Error: script \"top\" failed (included script 'missing' does not exist)" in body
