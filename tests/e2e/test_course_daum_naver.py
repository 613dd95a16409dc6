"""Issue 4 §5, the classic course scenario: A at daum.test sends to Z at naver.test.

Two whole Mailflow stacks (each with its own nats-server and store) on 127.0.0.2 and 127.0.0.3,
a real DNS server serving their MX records, real clients: smtplib submits with STARTTLS + AUTH,
daum resolves naver's MX and delivers over SMTP, Z reads by POP3 (and the message is gone after
DELE + QUIT) and by two IMAP clients (and it stays). Then the unhappy paths: naver down -> deferred
-> naver up -> delivered after `mailflow queue flush`; unknown user at naver -> DSN in A's INBOX;
a null-MX domain -> DSN.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.e2e.course import USERS, imap, imap_find, message, pop3, queue_show, start_course, states, submit
from tests.support import wait_for

A, A_PW = USERS["daum"]
Z, Z_PW = USERS["naver"]


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    es, c = start_course(tmp_path_factory)
    with es:
        yield c


def pop3_subjects(st) -> list[bytes]:
    p = pop3(st, Z, Z_PW)
    try:
        out = []
        for i in range(1, p.stat()[0] + 1):
            _, lines, _ = p.top(i, 0)
            out += [ln for ln in lines if ln.lower().startswith(b"subject:")]
        return out
    finally:
        p.quit()


def test_a_sends_to_z_who_reads_by_pop3_and_deletes(course):
    subject = f"course pop3 {uuid.uuid4().hex[:8]}"
    raw = message(Z, subject)
    qid = submit(course.daum, A, A_PW, [Z], raw)
    wait_for(lambda: states(course.daum, qid).get(Z) == "delivered", timeout=30, what="daum delivered to naver")
    shown = queue_show(course.daum, qid)
    (rcpt,) = shown["recipients"]
    assert rcpt["remote_mta"] == "mx.naver.test" and rcpt["last_status"].startswith("2.")
    wait_for(lambda: any(subject.encode() in s for s in pop3_subjects(course.naver)), timeout=30, what="Z sees it in POP3")
    p = pop3(course.naver, Z, Z_PW)
    n = p.stat()[0]
    found = None
    for i in range(1, n + 1):
        _, lines, _ = p.retr(i)
        body = b"\r\n".join(lines)
        if subject.encode() in body:
            found = i
            assert b"Hello from the course scenario" in body
            assert body.count(b"Received:") >= 2  # daum's submission and naver's MX both left their line
    assert found
    p.dele(found)
    p.quit()
    assert not any(subject.encode() in s for s in pop3_subjects(course.naver))
    # the journey, as `mailflow trace` shows it
    out = course.daum.cli("trace", qid, "--json")
    steps = [e["step"] for e in json.loads(out.stdout)]
    assert {"queue", "resolver", "delivery"} <= set(steps)


def test_second_message_read_by_two_imap_clients_stays(course):
    subject = f"course imap {uuid.uuid4().hex[:8]}"
    submit(course.daum, A, A_PW, [Z], message(Z, subject))
    wait_for(lambda: imap_find(course.naver, Z, Z_PW, subject), timeout=30, what="Z sees it in IMAP")
    one, two = imap(course.naver, Z, Z_PW), imap(course.naver, Z, Z_PW)
    try:
        for m in (one, two):
            typ, _ = m.select("INBOX")
            assert typ == "OK"
            _, data = m.uid("SEARCH", None, "ALL")
            uids = data[0].split()
            _, got = m.uid("FETCH", uids[-1].decode(), "(BODY[])")
            assert subject.encode() in got[0][1]
    finally:
        one.logout()
        two.logout()
    assert len(imap_find(course.naver, Z, Z_PW, subject)) == 1  # still on the server


def test_naver_down_deferred_then_flushed_and_delivered(course):
    subject = f"course deferred {uuid.uuid4().hex[:8]}"
    course.naver.stop_service("smtp-ingress")
    try:
        qid = submit(course.daum, A, A_PW, [Z], message(Z, subject))
        wait_for(lambda: states(course.daum, qid).get(Z) == "deferred", timeout=30, what="deferred while naver is down")
        rcpt = queue_show(course.daum, qid)["recipients"][0]
        assert rcpt["last_status"].startswith("4.") and rcpt["next_attempt_at"]
        listed = course.daum.cli("queue", "list", "--state", "deferred")
        assert qid in listed.stdout
    finally:
        course.naver.start_service("smtp-ingress")
    out = course.daum.cli("queue", "flush")
    assert "flushed" in out.stdout
    wait_for(lambda: states(course.daum, qid).get(Z) == "delivered", timeout=30, what="delivered after flush")
    wait_for(lambda: imap_find(course.naver, Z, Z_PW, subject), timeout=30, what="Z has it")


def dsn_for(st, needle: str) -> list[bytes]:
    return [b for b in imap_find(st, A, A_PW, needle) if b"MAILER-DAEMON" in b]


def test_unknown_user_at_naver_bounces_into_a_inbox(course):
    subject = f"course unknown {uuid.uuid4().hex[:8]}"
    qid = submit(course.daum, A, A_PW, ["nobody@naver.test"], message("nobody@naver.test", subject))
    wait_for(lambda: states(course.daum, qid).get("nobody@naver.test") == "bounced", timeout=30, what="bounced")
    (dsn,) = wait_for(lambda: dsn_for(course.daum, subject), timeout=30, what="DSN in A's INBOX")
    assert b"multipart/report" in dsn and b"report-type=delivery-status" in dsn
    assert b"Final-Recipient: rfc822; nobody@naver.test" in dsn and b"Action: failed" in dsn
    assert b"Status: 5.1.1" in dsn and b"Remote-MTA: dns; mx.naver.test" in dsn
    assert b"From: Mail Delivery System <MAILER-DAEMON@mx.daum.test>" in dsn


def test_null_mx_domain_bounces(course):
    subject = f"course nullmx {uuid.uuid4().hex[:8]}"
    qid = submit(course.daum, A, A_PW, ["x@nullmx.test"], message("x@nullmx.test", subject))
    wait_for(lambda: states(course.daum, qid).get("x@nullmx.test") == "bounced", timeout=30, what="bounced")
    (dsn,) = wait_for(lambda: dsn_for(course.daum, subject), timeout=30, what="DSN in A's INBOX")
    assert b"Status: 5.1.10" in dsn and b"null MX" in dsn
