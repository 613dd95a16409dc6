"""Our outgoing SMTP against a real foreign MTA: a throwaway Postfix (Debian's package) on 127.0.0.4.
Postfix advertises PIPELINING, SIZE and 8BITMIME; it must take the message and refuse an unknown
recipient per recipient. (The whole-stack version is tests/e2e/test_course_postfix.py.)"""

from __future__ import annotations

import pytest

from mailflow.contracts.messages import MxHost
from mailflow_delivery import smtp_out
from tests.e2e import postfix
from tests.support import free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not postfix.available(), reason="needs root and Debian's postfix")]


async def test_delivery_to_postfix():
    pf = postfix.Postfix("127.0.0.4", free_port("127.0.0.4"), relay_domain="daum.test", relay_to=("127.0.0.2", 9))
    with pf:
        hosts = [MxHost(preference=10, host="mx.postfix.test", addresses=["127.0.0.4"])]
        env = smtp_out.Envelope("a@daum.test", ["z@postfix.test", "nobody@postfix.test"], b"Subject: via postfix\r\n\r\n.dot\r\n", body_8bit=True)
        out = await smtp_out.deliver(hosts, pf.port, env, "mx.daum.test", smtp_out.TlsPolicy("opportunistic"), smtp_out.Timeouts(5, 5, 5, 5, 5))
        assert out.replies["z@postfix.test"].code == 250
        assert out.replies["nobody@postfix.test"].code == 550 and out.replies["nobody@postfix.test"].status == "5.1.1"
        (got,) = wait_for(lambda: pf.maildir(), timeout=20, what="Maildir delivery")
        text = got.replace(b"\r\n", b"\n")
        assert b"Subject: via postfix\n" in text and text.endswith(b"\n\n.dot\n")  # the dot unstuffed again
