"""Each load tool against a real stack, with a few messages: the tools `make bench` relies on keep
working, and their figures count what they say (messages, sessions, errors).

One stack for the module (six services, nats-server), users user0..user3@bench.test / pw, and
imap-pop3 with default_domain bench.test so "user2" logs in as against Dovecot. The tools run as
`make bench` runs them: `python -m tests.bench.load.<tool>`, one JSON line each.
"""

from __future__ import annotations

import imaplib
import subprocess
import sys

import pytest

from mailflow.stack import Ports, Stack
from tests.bench.common import ROOT, bench_users, run_tool
from tests.support import free_port, wait_for


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    env = {"MAILFLOW_IMAP_DEFAULT_DOMAIN": "bench.test", "MAILFLOW_LOG_LEVEL": "WARNING"}
    st = Stack(tmp_path_factory.mktemp("stack"), Ports.free(), env=env).start()
    try:
        bench_users(st, 4)
        yield st
    finally:
        st.stop()


def inbox(stack, user: str) -> int:
    with imaplib.IMAP4(stack.ports.host, stack.ports.imap, timeout=30) as c:
        c.login(user, "pw")
        return int(c.select("INBOX")[1][0])


def test_smtp_ingest_counts_every_250_and_the_mail_arrives(stack):
    out = run_tool(
        "smtp_ingest", "--port", str(stack.ports.smtp), "-n", "6", "-c", "2", "--users", "2", "--size", "2000"
    )
    assert (out["accepted"], out["errors"], out["messages"]) == (6, 0, 6)
    assert out["msgs_per_sec"] > 0 and 0 < out["p50_ms"] <= out["p99_ms"]
    wait_for(
        lambda: inbox(stack, "user0") == 3 and inbox(stack, "user1") == 3,
        timeout=30,
        what="6 messages stored",
    )


@pytest.mark.parametrize("mode", ["poll", "idle"])
def test_e2e_latency_measures_every_message(stack, mode):
    out = run_tool("e2e_latency", "--port", str(stack.ports.smtp), "--imap-port", str(stack.ports.imap),
                   "-n", "2", "--mode", mode, "--user", "user3", "--op-timeout", "20")  # fmt: skip
    assert (out["measured"], out["errors"]) == (2, 0), out
    assert 0 < out["p50_s"] <= out["p99_s"] <= out["max_s"] < 20


def test_imap_fetch_fills_then_reads_whole_mailboxes_and_pop3_retr_the_same(stack):
    imap = ["--port", str(stack.ports.imap), "--first-user", "2", "--users", "1", "-c", "2"]
    fill = run_tool("imap_fetch", *imap, "--fill", "-k", "3", "--rounds", "0", "--size", "1500")
    assert fill["errors"] == 0 and "fetched" not in fill
    start = inbox(stack, "user2")
    assert start >= 3  # user2 also gets nothing else in this module
    fetch = run_tool("imap_fetch", *imap, "--rounds", "2")
    assert (fetch["sessions"], fetch["fetched"], fetch["errors"]) == (4, 4 * start, 0)
    assert fetch["mb_per_sec"] > 0
    # one client: a maildrop is locked while a POP3 session has it (the bench's clients never share one)
    pop3 = run_tool(
        "pop3_retr",
        "--port",
        str(stack.ports.pop3),
        "--first-user",
        "2",
        "--users",
        "1",
        "-c",
        "1",
        "--rounds",
        "2",
    )
    assert (pop3["sessions"], pop3["retrieved"], pop3["errors"]) == (2, 2 * start, 0)
    assert inbox(stack, "user2") == start  # RETR without DELE leaves the maildrop as it was


def test_imap_logins_counts_logins_and_a_wrong_password_as_errors(stack):
    imap = ["--port", str(stack.ports.imap), "--first-user", "0", "--users", "2", "-c", "2", "--rounds", "2"]
    ok = run_tool("imap_logins", *imap)
    assert (ok["logins"], ok["errors"]) == (4, 0)
    bad = run_tool(
        "imap_logins", "--port", str(stack.ports.imap), "--rounds", "1", "-c", "1", "--password", "wrong"
    )
    assert (bad["logins"], bad["errors"]) == (0, 1)
    assert "NO" in bad["first_error"]


def test_a_server_that_is_not_there_is_errors_not_a_crash():
    out = run_tool("smtp_ingest", "--port", str(free_port()), "-n", "3", "-c", "1")
    assert (out["accepted"], out["errors"]) == (0, 3)
    assert "ConnectionRefusedError" in out["first_error"]


def test_a_target_off_loopback_is_refused_before_connecting():
    proc = subprocess.run([sys.executable, "-m", "tests.bench.load.imap_logins", "--host", "192.0.2.1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "only target numeric loopback" in proc.stderr
