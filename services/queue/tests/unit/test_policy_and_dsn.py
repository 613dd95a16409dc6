"""Pure parts of the queue: the retry schedule, NOTIFY semantics, and the DSN's shape (RFC 3464)."""

from __future__ import annotations

import email
import email.policy
import random

import pytest

from mailflow_queue import dsn
from mailflow_queue.ledger import NoticeRecipient, NoticeWork, Policy, wants


def test_backoff_doubles_from_a_minute_and_is_capped():
    p = Policy(jitter=0.0)
    assert [p.retry_delay(a) for a in range(1, 9)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_jitter_stays_within_bounds_and_varies():
    p = Policy(jitter=0.15, rng=random.Random(7))
    delays = {round(p.retry_delay(1), 3) for _ in range(50)}
    assert len(delays) > 10 and all(51 <= d <= 69 for d in delays)


@pytest.mark.parametrize(
    "notify,kind,expected",
    [
        ("", "FAILURE", True),
        ("", "DELAY", True),
        ("", "SUCCESS", False),
        ("NEVER", "FAILURE", False),
        ("SUCCESS", "FAILURE", False),
        ("SUCCESS,FAILURE", "SUCCESS", True),
        ("FAILURE", "DELAY", False),
    ],
)
def test_notify(notify, kind, expected):
    assert wants(notify, kind) is expected


def work(kind="failure", ret=None, size=100, envid="ENV1"):
    return NoticeWork(
        notice_id=1,
        kind=kind,
        dsn_queue_id="DSNQID",
        queue_id="QID",
        trace_id="t",
        mail_from="a@daum.test",
        body_ref="nats:QID:1:100",
        body_deleted=False,
        size=size,
        received_at=1_800_000_000.0,
        envid=envid,
        ret=ret,
        will_retry_until=1_800_432_000.0,
        recipients=[
            NoticeRecipient("z@naver.test", "rfc822;Z@naver.test", "bounced", "5.1.1", "550 5.1.1 no such user\r\nhere", "mx.naver.test", 1_800_000_100.0),
            NoticeRecipient("y@naver.test", None, "bounced", "", "ünïcode", None, 1_800_000_100.0),
        ],
    )


ORIGINAL = b"From: a@daum.test\r\nTo: z@naver.test\r\nSubject: hi\r\n\r\nbody line\r\n"


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_failure_dsn_is_multipart_report_with_the_whole_message():
    raw = dsn.build(work(), ORIGINAL, "mx.daum.test", 1_800_000_200.0)
    assert raw.isascii() and b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.daum.test"
    assert msg["To"].addresses[0].addr_spec == "a@daum.test" and msg["Auto-Submitted"] == "auto-replied"
    text, status, returned = msg.get_payload()
    assert text.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    assert returned.get_content_type() == "message/rfc822"
    assert b"body line" in raw
    fields = raw.split(b"message/delivery-status\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0].decode()
    per_message, first, second = fields.strip().split("\r\n\r\n")
    assert "Reporting-MTA: dns; mx.daum.test" in per_message and "Original-Envelope-Id: ENV1" in per_message
    assert "Original-Recipient: rfc822;Z@naver.test" in first
    assert "Final-Recipient: rfc822; z@naver.test" in first and "Action: failed" in first
    assert "Status: 5.1.1" in first and "Remote-MTA: dns; mx.naver.test" in first
    assert "Diagnostic-Code: smtp; 550 5.1.1 no such user here" in first
    assert "Status: 5.0.0" in second and "Diagnostic-Code: smtp; ?n?code" in second


def test_ret_hdrs_and_big_messages_return_headers_only():
    for w in (work(ret="HDRS"), work(size=10 << 20)):
        msg = parse(dsn.build(w, ORIGINAL, "h", 0.0))
        assert msg.get_payload()[2].get_content_type() == "text/rfc822-headers"
        assert b"body line" not in dsn.build(w, ORIGINAL, "h", 0.0)
    full = parse(dsn.build(work(ret="FULL", size=10 << 20), ORIGINAL, "h", 0.0))
    assert full.get_payload()[2].get_content_type() == "message/rfc822"


def test_delay_and_success_reports():
    delay = dsn.build(work("delay"), ORIGINAL, "h", 0.0)
    assert b"Action: delayed" in delay and b"Will-Retry-Until:" in delay and b"Status: 5.1.1" in delay
    assert b"text/rfc822-headers" in delay
    ok = dsn.build(work("success"), None, "h", 0.0)
    assert b"Action: relayed" in ok and b"Action: delivered" in ok and b"Status: 2.0.0" in ok
    assert len(parse(ok).get_payload()) == 2
