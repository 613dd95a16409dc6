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
    assert res == [("a@daum.test", "delivered", "250 2.0.0 not filed: the recipient's Sieve script discarded, redirected or rejected it")]
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


class MemoryMailer:
    """What SieveFilter queued, by queue id (a retry queuing the same message again leaves one)."""

    def __init__(self):
        self.sent: dict[str, tuple] = {}

    async def send(self, msg, trace_id):
        self.sent[msg.queue_id] = (msg.kind, msg.mail_from, msg.rcpt, msg.body)
        assert msg.forwarded_for == ("a@daum.test" if msg.kind == "redirect" else None)  # sealed as forwarded


SENDER = b"""require ["reject", "vacation", "fileinto", "copy"];
if header :is "x-action" "forward" { redirect "boss@elsewhere.test"; }
if header :is "x-action" "copy" { redirect :copy "boss@elsewhere.test"; }
if header :is "x-action" "reject" { reject "Not interested."; }
if header :is "x-action" "away" { vacation :days 2 :subject "Away" "Back on Monday."; }
"""


@pytest.fixture
async def sending(world):
    store, a, bodies, _ = world
    await store.put_script(a, "send", SENDER)
    await store.set_active(a, "send")
    mailer = MemoryMailer()
    d = Deliveries(store, store, bodies, None, MemorySentLog(), sieve=SieveFilter(store, store, ttl=0, mailer=mailer, hostname="mx.daum.test"))
    return store, a, bodies, d, mailer


async def test_redirect_reject_and_vacation_are_queued(sending):
    store, a, bodies, d, mailer = sending
    res, jobs = await deliver(bodies, d, "S1", message("fwd", extra="X-Action: forward\r\n"))
    assert res[0][1] == "delivered" and store.messages("a@daum.test", None) == []
    ((kind, mail_from, rcpt, body),) = mailer.sent.values()
    assert (kind, mail_from, rcpt) == ("redirect", "carol@elsewhere.test", "boss@elsewhere.test")
    assert body.startswith(b"Received: by mx.daum.test (Mailflow Sieve redirect)\r\n\tfor <boss@elsewhere.test>;")
    assert body.endswith(message("fwd", extra="X-Action: forward\r\n"))  # our Return-Path: line dropped
    await d.run(jobs)  # the job again: the same queue id, one message
    assert len(mailer.sent) == 1

    await deliver(bodies, d, "S2", message("cc", extra="X-Action: copy\r\n"))
    assert len(mailer.sent) == 2 and len(store.messages("a@daum.test")) == 1  # :copy keeps it too

    await deliver(bodies, d, "S3", message("no", extra="X-Action: reject\r\n"))
    (rejected,) = [v for v in mailer.sent.values() if v[0] == "reject"]
    assert rejected[1:3] == ("", "carol@elsewhere.test") and b"Not interested." in rejected[3]
    assert len(store.messages("a@daum.test")) == 1  # not filed

    away = message("lunch?", extra="X-Action: away\r\n")
    await deliver(bodies, d, "S4", away)
    await deliver(bodies, d, "S5", away)  # within :days: no second reply
    replies = [v for v in mailer.sent.values() if v[0] == "vacation"]
    assert len(replies) == 1 and replies[0][1:3] == ("", "carol@elsewhere.test")
    assert b"Subject: Away\r\n" in replies[0][3] and replies[0][3].endswith(b"Back on Monday.\r\n")
    assert len(store.messages("a@daum.test")) == 3  # vacation keeps the message


async def test_a_redirect_loop_is_kept_and_no_mailer_sends_nothing(sending, world):
    store, a, bodies, d, mailer = sending
    looped = b"".join(b"Received: from hop%d\r\n" % i for i in range(101)) + message("fwd", extra="X-Action: forward\r\n")
    res, _ = await deliver(bodies, d, "S6", looped)
    assert res[0][1] == "delivered" and mailer.sent == {}
    (body,) = store.messages("a@daum.test")
    assert b"X-Mailflow-Sieve-Error: script \"send\" failed (redirect refused: more than 100 Received: fields" in body
    _, _, _, plain = world  # a filter without a mailer: the message is kept, nothing is lost
    await deliver(bodies, plain, "S7", message("fwd", extra="X-Action: forward\r\n"))
    assert len(store.messages("a@daum.test")) == 2
