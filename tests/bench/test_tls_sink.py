"""The receiver of bench_tls (tests/bench/tls_sink.py): Postfix's smtpd with STARTTLS in front of smtp-sink.

Mail in clear is refused; over STARTTLS, with the certificate it was given (verified against the
test's CA), mail to its domains is accepted and to others refused; each handshake is counted from its
log with the protocol and cipher; `stop` ends both daemons and removes its folder. Needs root and
Debian's postfix (skipped otherwise).
"""

from __future__ import annotations

import smtplib
import ssl

import pytest

from tests.bench.tls_sink import TlsSink, available
from tests.support import free_port, wait_for
from tests.support.daemons import alive
from tests.support.pki import TestCa

pytestmark = pytest.mark.skipif(not available(), reason="needs root and Debian's postfix (smtpd, smtp-sink)")

MESSAGE = b"From: a@sender.test\r\nSubject: tls sink\r\n\r\nHello.\r\n"


def test_mail_only_over_starttls_each_handshake_counted_and_stop_leaves_nothing(tmp_path):
    ca = TestCa(tmp_path)
    cert, key = ca.issue("mx.one.test")
    sink = TlsSink("127.0.0.1", free_port(), free_port(), ["one.test", "two.test"], cert, key).start()
    try:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as c:
            c.ehlo("client.test")
            assert c.mail("a@sender.test") == (530, b"5.7.0 Must issue a STARTTLS command first")

        ctx = ssl.create_default_context(cafile=str(ca.cert))
        ctx.check_hostname = False  # the name is the client's to check (delivery does); the chain is checked here
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as c:
            c.starttls(context=ctx)
            assert c.sendmail("a@sender.test", ["x@one.test", "y@two.test"], MESSAGE) == {}
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                c.sendmail("a@sender.test", ["z@three.test"], MESSAGE)
            assert refused.value.recipients["z@three.test"][0] == 554  # relay access denied

        sessions = wait_for(lambda: sink.tls_sessions(), timeout=10, what="the handshake in the log")
        ((kind, count),) = sessions.items()
        assert count == 1 and kind.startswith("TLSv1.") and " with cipher " in kind
    finally:
        pids, root = sink.cpu_pids(), sink.root
        sink.stop()
    assert len(pids) == 2 and not any(alive(p) for p in pids) and not root.exists()
