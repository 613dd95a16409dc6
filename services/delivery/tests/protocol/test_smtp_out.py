"""Outgoing SMTP against real servers on loopback: aiosmtpd with STARTTLS, and a scripted MTA."""

from __future__ import annotations

import base64
import logging
from dataclasses import replace

import pytest
from pydantic import SecretStr

from mailflow import tls
from mailflow.contracts.messages import MxHost
from mailflow_delivery import smtp_out
from services.delivery.tests.support import RemoteMta, Scripted
from tests.support import free_port

FAST = smtp_out.Timeouts(connect=2, greeting=2, command=2, data_start=2, data_end=2)
OPPORTUNISTIC = smtp_out.TlsPolicy("opportunistic", tls.client_context(verify=False))
BODY = b"From: a@daum.test\r\nSubject: hi\r\n\r\n.leading dot\r\nbare lf\nend"


def env(*rcpts, **kw):
    return smtp_out.Envelope(mail_from="a@daum.test", rcpts=list(rcpts), data=BODY, **kw)


async def test_starttls_and_per_recipient_replies(tmp_path):
    with RemoteMta(tmp_path) as mta:
        hosts = [MxHost(preference=10, host="mx.remote.test", addresses=["127.0.0.1"])]
        out = await smtp_out.deliver(hosts, mta.port, env("z@remote.test", "unknown@remote.test", "busy@remote.test"), "mx.daum.test", OPPORTUNISTIC, FAST)
    assert out.host == "mx.remote.test" and out.tls and out.tls.startswith("TLS")
    assert out.replies["z@remote.test"].code == 250
    assert out.replies["unknown@remote.test"].status == "5.1.1"
    assert out.replies["busy@remote.test"].status == "4.2.1"
    (got,) = mta.messages
    assert got.tls and got.rcpts == ["z@remote.test"] and f"SIZE={len(smtp_out.wire_data(BODY))}" in got.mail_options
    assert got.data == b"From: a@daum.test\r\nSubject: hi\r\n\r\n.leading dot\r\nbare lf\r\nend\r\n"


async def test_first_mx_refuses_connection_second_takes_it(tmp_path):
    with RemoteMta(tmp_path, starttls=False) as mta:
        dead = free_port()
        hosts = [
            MxHost(preference=10, host="mx1.remote.test", addresses=["127.0.0.1"]),
            MxHost(preference=20, host="mx2.remote.test", addresses=["127.0.0.1"]),
        ]
        # both hosts are on 127.0.0.1; the port decides. Use a scripted greeting refusal for the first.
        bad = await Scripted(replies={}, greeting="554 no service here").start()
        try:
            with pytest.raises(smtp_out.Unreachable) as err:
                await smtp_out.deliver(hosts[:1], dead, env("z@remote.test"), "h", OPPORTUNISTIC, FAST)
            assert "connect" in str(err.value)
            with pytest.raises(smtp_out.Unreachable, match="greeting 554"):
                await smtp_out.deliver(hosts[:1], bad.port, env("z@remote.test"), "h", OPPORTUNISTIC, FAST)
        finally:
            await bad.stop()
        out = await smtp_out.deliver(hosts, mta.port, env("z@remote.test"), "h", OPPORTUNISTIC, FAST)
        assert out.replies["z@remote.test"].code == 250 and out.tls is None


async def test_tls_required_but_not_offered_is_unreachable(tmp_path):
    with RemoteMta(tmp_path, starttls=False) as mta:
        hosts = [MxHost(preference=10, host="mx.remote.test", addresses=["127.0.0.1"])]
        policy = smtp_out.TlsPolicy("require", tls.client_context(verify=False))
        with pytest.raises(smtp_out.Unreachable, match="STARTTLS required"):
            await smtp_out.deliver(hosts, mta.port, env("z@remote.test"), "h", policy, FAST)
        assert mta.messages == []


async def test_pipelining_sends_the_envelope_in_one_write():
    s = await Scripted(replies={"DATA": "354 go on", "RCPT TO:<NO@": "550 5.1.1 unknown"}).start()
    try:
        hosts = [MxHost(preference=0, host="scripted.test", addresses=["127.0.0.1"])]
        out = await smtp_out.deliver(hosts, s.port, env("yes@x.test", "no@x.test"), "h", smtp_out.TlsPolicy("none"), FAST)
    finally:
        await s.stop()
    assert out.replies["yes@x.test"].code == 250 and out.replies["no@x.test"].code == 550
    envelope_chunk = next(c for c in s.reads if c.startswith(b"MAIL FROM"))
    assert envelope_chunk.count(b"\r\n") == 4 and envelope_chunk.endswith(b"DATA\r\n")


async def test_mail_refused_and_data_refused():
    s = await Scripted(replies={"MAIL": "452 4.3.1 out of space", "DATA": "503 5.5.1 no"}).start()
    hosts = [MxHost(preference=0, host="scripted.test", addresses=["127.0.0.1"])]
    try:
        out = await smtp_out.deliver(hosts, s.port, env("a@x.test"), "h", smtp_out.TlsPolicy("none"), FAST)
        assert out.replies["a@x.test"].status == "4.3.1"
        s.replies = {"DATA": "354 go", "DOT": "554 5.7.1 spam"}
        out = await smtp_out.deliver(hosts, s.port, env("a@x.test"), "h", smtp_out.TlsPolicy("none"), FAST)
        assert out.replies["a@x.test"].status == "5.7.1"
    finally:
        await s.stop()


async def test_connection_lost_after_the_dot_is_a_deferral():
    s = await Scripted(replies={"DATA": "354 go"}, drop_after_data=True).start()
    hosts = [MxHost(preference=0, host="scripted.test", addresses=["127.0.0.1"])]
    try:
        out = await smtp_out.deliver(hosts, s.port, env("a@x.test"), "h", smtp_out.TlsPolicy("none"), FAST)
    finally:
        await s.stop()
    assert out.replies["a@x.test"].code == 451 and out.deferred_all is not None


async def test_size_limit_and_lock_step_without_pipelining():
    s = await Scripted(replies={"DATA": "354 go"}, ehlo=("250-small", "250 SIZE 10")).start()
    hosts = [MxHost(preference=0, host="scripted.test", addresses=["127.0.0.1"])]
    try:
        out = await smtp_out.deliver(hosts, s.port, env("a@x.test"), "h", smtp_out.TlsPolicy("none"), FAST)
        assert out.replies["a@x.test"].status == "5.3.4"
        s.ehlo = ("250 plain",)
        out = await smtp_out.deliver(hosts, s.port, env("a@x.test", "b@x.test"), "h", smtp_out.TlsPolicy("none"), FAST)
        assert {r.code for r in out.replies.values()} == {250}
        assert all(c.count(b"\r\n") == 1 for c in s.reads if c.startswith((b"MAIL", b"RCPT")))
    finally:
        await s.stop()


# --- a hostile or broken remote: the MX is untrusted input --------------------------------------------


async def deliver_to(s: Scripted, *rcpts: str) -> smtp_out.Outcome:
    hosts = [MxHost(preference=0, host="scripted.test", addresses=["127.0.0.1"])]
    return await smtp_out.deliver(hosts, s.port, env(*rcpts), "h", smtp_out.TlsPolicy("none"), FAST)


@pytest.mark.parametrize(
    "greeting, ehlo, error",
    [
        ("220 " + "x" * 70_000, ("250 ok",), "reply too long"),  # past the reader's buffer, no end of line
        ("220 " + "x" * 3_000, ("250 ok",), "reply too long"),  # past MAX_REPLY_LINE
        ("220 ok", ("250-x",) * smtp_out.MAX_REPLY_LINES + ("250 ok",), "reply too long"),  # endless continuation
        ("hello there", ("250 ok",), "malformed reply"),
        ("220 ok", ("25",), "malformed reply"),
    ],
    ids=["line-past-the-buffer", "line-past-the-cap", "endless-continuation", "no-code", "short-code"],
)
async def test_a_hostile_reply_makes_the_host_unreachable(greeting, ehlo, error):
    s = await Scripted(replies={}, greeting=greeting, ehlo=ehlo).start()
    try:
        with pytest.raises(smtp_out.Unreachable, match=error):
            await deliver_to(s, "a@x.test")
    finally:
        await s.stop()


async def test_a_silent_remote_times_out_per_phase():
    """No reply to RCPT within the command timeout: this host is unreachable, the next one is tried."""
    s = await Scripted(replies={"RCPT": None}, ehlo=("250 no pipelining",)).start()
    try:
        with pytest.raises(smtp_out.Unreachable, match="no reply within 2s"):
            await deliver_to(s, "a@x.test")
    finally:
        await s.stop()


# --- AUTH (a relay's login, RFC 4954) ------------------------------------------------------------------


async def test_auth_login_when_plain_is_not_offered_and_never_in_clear_unless_allowed(caplog):
    user, password = base64.b64encode(b"relay-user").decode(), base64.b64encode(b"s3cret-pw").decode()
    s = await Scripted(
        replies={"AUTH LOGIN": "334 VXNlcm5hbWU6", user.upper(): "334 UGFzc3dvcmQ6", password.upper(): "235 2.7.0 ok"},
        ehlo=("250-relay", "250 AUTH LOGIN"),
    ).start()
    hosts = [MxHost(preference=0, host="relay.test", addresses=["127.0.0.1"])]
    login = smtp_out.Credentials("relay-user", SecretStr("s3cret-pw"))
    try:
        with pytest.raises(smtp_out.Unreachable, match="without TLS") as err:
            await smtp_out.deliver(hosts, s.port, env("a@x.test"), "h", smtp_out.TlsPolicy("none"), FAST, auth=login)
        assert err.value.status == "4.7.10" and s.lines == [b"EHLO h"]
        s.lines.clear()
        with caplog.at_level(logging.DEBUG, logger="mailflow_delivery.smtp_out"):
            out = await smtp_out.deliver(hosts, s.port, env("a@x.test"), "h", smtp_out.TlsPolicy("none"), FAST, auth=replace(login, in_clear=True))
    finally:
        await s.stop()
    assert out.replies["a@x.test"].code == 250
    assert s.lines[:4] == [b"EHLO h", b"AUTH LOGIN", user.encode(), password.encode()]
    assert ">> AUTH LOGIN" in caplog.text and ">> ****" in caplog.text and user not in caplog.text and password not in caplog.text
