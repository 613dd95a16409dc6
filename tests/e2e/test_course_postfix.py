"""Issue 4 §5, a foreign MTA: a throwaway Postfix (Debian's package) on 127.0.0.4 talks to Mailflow.

Outbound: A at daum.test writes to z@postfix.test; daum resolves postfix.test's MX from the test's
DNS server and delivers over SMTP; the message lands in Postfix's Maildir. Inbound: Postfix is given
a message for a@daum.test and relays it (transport map, no DNS) to daum's smtp-ingress; A reads it
over IMAP.
"""

from __future__ import annotations

import re
import smtplib
import uuid

import pytest

from tests.e2e import postfix
from tests.e2e.course import USERS, imap_find, message, queue_show, start_course, states, submit
from tests.support import wait_for

A, A_PW = USERS["daum"]

pytestmark = [
    pytest.mark.slow,  # a real-program suite: two stacks and a Postfix
    pytest.mark.skipif(not postfix.available(), reason="needs root and Debian's postfix (apt-get install postfix)"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    es, c = start_course(tmp_path_factory)
    with es:
        # daum delivers to every MX on naver's SMTP port number: Postfix takes the same port on 127.0.0.4
        pf = postfix.Postfix(
            host="127.0.0.4",
            port=c.naver.ports.smtp,
            relay_domain="daum.test",
            relay_to=(c.daum.ports.host, c.daum.ports.smtp),
        )
        with pf:
            yield c, pf


def test_mailflow_delivers_to_postfix(world):
    c, pf = world
    subject = f"to postfix {uuid.uuid4().hex[:8]}"
    qid = submit(c.daum, A, A_PW, ["z@postfix.test"], message("z@postfix.test", subject))
    wait_for(lambda: states(c.daum, qid).get("z@postfix.test") == "delivered", timeout=30, what="Postfix accepted it")
    (got,) = wait_for(lambda: [m for m in pf.maildir() if subject.encode() in m], timeout=30, what="in Postfix's Maildir")
    assert b"Hello from the course scenario" in got
    assert b"mx.daum.test" in got  # daum's Received: line travelled along


def test_postfix_relays_to_mailflow(world):
    c, pf = world
    subject = f"from postfix {uuid.uuid4().hex[:8]}"
    with smtplib.SMTP("127.0.0.4", pf.port, timeout=30) as s:
        s.ehlo("client.test")
        s.sendmail("someone@postfix.test", [A], message(A, subject, sender="someone@postfix.test"))
    try:
        (got,) = wait_for(lambda: imap_find(c.daum, A, A_PW, subject), timeout=40, what="relayed into A's INBOX")
    except AssertionError:
        ids = re.findall(r"queued as (\w+)", pf.log())
        shown = [queue_show(c.daum, q) for q in ids]
        raise AssertionError(f"not in A's INBOX; daum's queue says {shown}; postfix log:\n" + pf.log()[-3000:]) from None
    assert b"mx.postfix.test" in got  # Postfix's Received: line
