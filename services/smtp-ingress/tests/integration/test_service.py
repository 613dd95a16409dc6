"""The service as a process (`python -m mailflow_smtp_ingress`) with the real mailbox-store and nats-server:
recipients and passwords checked by the store (aliases, catch-all, +tag), swaks end to end (PIPELINING,
STARTTLS + AUTH submission, a DSN request), store outages, and the SIGTERM drain."""

from __future__ import annotations

import asyncio
import base64
import shutil
import smtplib
import subprocess
import threading

import httpx
import pytest

from mailflow import natsconn, tls
from mailflow.contracts.messages import QueuedMessage, QueuedMessages
from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.contracts.streams import ensure_streams
from mailflow.stack import Ports, Stack
from tests.support import wait_for


@pytest.fixture(scope="module")
def st(tmp_path_factory):
    stack = Stack(
        tmp_path_factory.mktemp("smtp-stack"),
        Ports.free(),
        services=("mailbox-store",),
        env={"MAILFLOW_SMTP_AUTH_FAILURE_DELAY": "0.1"},
    )
    stack.start()
    try:
        asyncio.run(apply_streams(stack))  # no queue runs here: smtp-ingress waits for it to make them
        stack.start_service("smtp-ingress")
        with httpx.Client(
            base_url=stack.http_url("mailbox-store"), headers={ADMIN_TOKEN_HEADER: stack.admin_token}
        ) as c:
            for path, body in [
                ("/admin/domains", {"name": "example.test"}),
                ("/admin/domains", {"name": "catchall.test"}),
                ("/admin/users", {"address": "alice@example.test", "password": "alice-pw"}),
                ("/admin/users", {"address": "bob@example.test", "password": "bob-pw"}),
                ("/admin/aliases", {"address": "sales@example.test", "targets": ["alice@example.test"]}),
                ("/admin/aliases", {"address": "@catchall.test", "targets": ["bob@example.test"]}),
            ]:
                c.post(path, json=body).raise_for_status()
        yield stack
    finally:
        stack.stop()


async def apply_streams(stack: Stack) -> None:
    nc = await natsconn.connect(stack.nats_url, "queue", initial_timeout=5, **stack.nats_login("queue"))
    try:
        await ensure_streams(nc.jetstream())
    finally:
        await natsconn.close(nc)


def queued(stack: Stack) -> list[QueuedMessage]:
    """Every envelope in stream MAIL (no queue service runs here, so they stay)."""

    async def read() -> list[QueuedMessage]:
        nc = await natsconn.connect(stack.nats_url, "queue", initial_timeout=5, **stack.nats_login("queue"))
        try:
            js = nc.jetstream()
            info = await js.stream_info("MAIL")
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    out += QueuedMessages.from_bytes((await js.get_msg("MAIL", seq=seq)).data).messages
                except Exception:
                    pass
            return out
        finally:
            await natsconn.close(nc)

    return asyncio.run(read())


def test_recipients_are_resolved_by_the_store(st):
    with smtplib.SMTP(st.ports.host, st.ports.smtp, timeout=30) as s:
        s.ehlo("client.elsewhere.test")
        s.mail("carol@elsewhere.test")
        assert s.rcpt("alice@example.test")[0] == 250
        assert s.rcpt("alice+news@example.test")[0] == 250
        assert s.rcpt("sales@example.test")[0] == 250
        assert s.rcpt("whoever@catchall.test")[0] == 250
        code, text = s.rcpt("nobody@example.test")
        assert code == 550 and text.startswith(b"5.1.1")
        code, text = s.rcpt("someone@elsewhere.test")
        assert code == 550 and text.startswith(b"5.7.1")
        code, text = s.data(b"Subject: resolved\r\n\r\nby the store\r\n")
        assert code == 250
    queue_id = text.decode().rsplit(" ", 1)[1]
    (msg,) = [m for m in queued(st) if m.queue_id == queue_id]
    assert [r.address for r in msg.rcpt_to] == [
        "alice@example.test",
        "alice+news@example.test",
        "sales@example.test",
        "whoever@catchall.test",
    ]


def test_auth_against_the_store(st):
    ctx = tls.client_context(verify=False)
    with smtplib.SMTP(st.ports.host, st.ports.submission, timeout=30) as s:
        s.starttls(context=ctx)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("alice@example.test", "wrong")
        s.login("alice@example.test", "alice-pw")
        code, _ = s.mail("bob@example.test")
        assert code == 553
        s.rset()
        assert (
            s.sendmail("alice@example.test", ["friend@elsewhere.test"], b"Subject: out\r\n\r\nrelay ok\r\n")
            == {}
        )
    with smtplib.SMTP_SSL(st.ports.host, st.ports.smtps, timeout=30, context=ctx) as s:
        s.login("bob@example.test", "bob-pw")
        assert s.sendmail("bob@example.test", ["alice@example.test"], b"Subject: 465\r\n\r\nx\r\n") == {}


def swaks_has_dsn_options() -> bool:
    return "--dsn-notify" in subprocess.run(["swaks", "--help"], capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed (apt-get install -y swaks)")
def test_swaks_pipelining_starttls_auth_and_dsn(st):
    """The real tool: STARTTLS, AUTH PLAIN, PIPELINING and a DSN request (NOTIFY, ORCPT, RET, ENVID)."""
    if swaks_has_dsn_options():
        dsn = [
            "--from",
            "alice@example.test",
            "--to",
            "bob@example.test",
            "--dsn-notify",
            "SUCCESS,FAILURE",
            "--dsn-rcpt-orcpt",
            "rfc822;bob@example.test",
            "--dsn-return",
            "HDRS",
            "--dsn-envid",
            "swaks-env-1",
        ]
    else:
        # Debian 12's swaks (20201014) predates --dsn-*; it writes the addresses verbatim between < and >,
        # so the parameters ride along, each ending in a value that takes the closing '>' (AUTH=<>, ORCPT=<...>).
        dsn = [
            "--from",
            "alice@example.test> RET=HDRS ENVID=swaks-env-1 AUTH=<",
            "--to",
            "bob@example.test> NOTIFY=SUCCESS ORCPT=rfc822;<bob@example.test",
        ]
    out = subprocess.run(
        [
            "swaks",
            "--server",
            st.ports.host,
            "--port",
            str(st.ports.submission),
            "-tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice@example.test",
            "--auth-password",
            "alice-pw",
            "--pipeline",
            "--header",
            "Subject: swaks end to end",
            "--body",
            "Sent by swaks.",
            "--ehlo",
            "swaks.example.test",
            *dsn,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    transcript = out.stdout
    assert "<-  220 2.0.0 Ready to start TLS" in transcript
    assert "<~  235 2.7.0 Authentication successful" in transcript
    assert "~> MAIL FROM:<alice@example.test>" in transcript and "RCPT TO:<bob@example.test>" in transcript
    queue_id = transcript.split("queued as ")[1].split()[0]
    (msg,) = [m for m in queued(st) if m.queue_id == queue_id]
    assert msg.client.auth_user == "alice@example.test" and msg.client.tls
    assert msg.ret == "HDRS" and msg.envid == "swaks-env-1"
    (rcpt,) = msg.rcpt_to
    assert rcpt.address == "bob@example.test" and "SUCCESS" in rcpt.notify
    assert rcpt.orcpt == "rfc822;bob@example.test"


def test_store_down_is_451_and_454_never_5xx(st):
    st.kill("mailbox-store")
    try:
        with smtplib.SMTP(st.ports.host, st.ports.smtp, timeout=30) as s:
            s.ehlo("client.elsewhere.test")
            s.mail("carol@elsewhere.test")
            code, text = s.rcpt("not-cached-yet@example.test")
            assert code == 451 and text.startswith(b"4.4.3")
        with smtplib.SMTP(st.ports.host, st.ports.submission, timeout=30) as s:
            s.starttls(context=tls.client_context(verify=False))
            s.ehlo("laptop.example.test")
            plain = base64.b64encode(b"\0alice@example.test\0alice-pw").decode()
            code, text = s.docmd("AUTH", "PLAIN " + plain)
            assert code == 454 and text.startswith(b"4.7.0")
    finally:
        st.start_service("mailbox-store")


def test_sigterm_lets_the_open_transaction_finish(st):
    s = smtplib.SMTP(st.ports.host, st.ports.smtp, timeout=30)
    s.ehlo("client.elsewhere.test")
    s.mail("carol@elsewhere.test")
    assert s.rcpt("alice@example.test")[0] == 250
    idle = smtplib.SMTP(st.ports.host, st.ports.smtp, timeout=30)
    idle.ehlo("idle.elsewhere.test")
    stopper = threading.Thread(target=st.stop_service, args=("smtp-ingress",))
    stopper.start()
    try:
        wait_for(lambda: idle.noop()[0] == 421, timeout=10, what="the idle session to get 421")
    except smtplib.SMTPServerDisconnected:
        pass
    code, text = s.data(b"Subject: during SIGTERM\r\n\r\nfinished while draining\r\n")
    assert code == 250, text
    stopper.join(30)
    proc = st.procs[("smtp-ingress", 0)].popen
    assert proc.returncode == 0
    queue_id = text.decode().rsplit(" ", 1)[1]
    assert any(m.queue_id == queue_id for m in queued(st))
    st.start_service("smtp-ingress")
