"""swaks through the whole stack (slow tier): submission with STARTTLS, AUTH and PIPELINING, a DSN
request, and the message read back over IMAP from the recipient's INBOX."""

from __future__ import annotations

import imaplib
import shutil
import subprocess
import uuid

import httpx
import pytest

from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.stack import Ports, Stack
from tests.support import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("swaks") is None, reason="swaks not installed (apt-get install -y swaks)"
    ),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    st = Stack(tmp_path_factory.mktemp("swaks-stack"), Ports.free()).start()
    try:
        with httpx.Client(
            base_url=st.http_url("mailbox-store"), headers={ADMIN_TOKEN_HEADER: st.admin_token}
        ) as c:
            c.post("/admin/domains", json={"name": "example.test"}).raise_for_status()
            for user in ("alice", "bob"):
                c.post(
                    "/admin/users", json={"address": f"{user}@example.test", "password": f"{user}-pw"}
                ).raise_for_status()
        yield st
    finally:
        st.stop()


def inbox_has(stack: Stack, user: str, token: str) -> bool:
    with imaplib.IMAP4(stack.ports.host, stack.ports.imap, timeout=30) as m:
        m.login(f"{user}@example.test", f"{user}-pw")
        m.select("INBOX", readonly=True)
        _, data = m.uid("SEARCH", None, "HEADER", "X-Token", token)
        return bool(data and data[0].split())


def test_swaks_submission_reaches_the_inbox(stack):
    token = uuid.uuid4().hex
    out = subprocess.run(
        [
            "swaks",
            "--server",
            stack.ports.host,
            "--port",
            str(stack.ports.submission),
            "-tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice@example.test",
            "--auth-password",
            "alice-pw",
            "--pipeline",
            "--from",
            "alice@example.test> RET=HDRS ENVID=e2e-1 AUTH=<",
            "--to",
            "bob@example.test> NOTIFY=FAILURE ORCPT=rfc822;<bob@example.test",
            "--header",
            f"X-Token: {token}",
            "--header",
            "Subject: swaks through the stack",
            "--body",
            "Hello Bob.",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "250 2.0.0 Ok: queued as" in out.stdout
    wait_for(
        lambda: inbox_has(stack, "bob", token), timeout=60, interval=0.5, what="the message in bob's INBOX"
    )


def test_swaks_inbound_mx(stack):
    token = uuid.uuid4().hex
    out = subprocess.run(
        [
            "swaks",
            "--server",
            stack.ports.host,
            "--port",
            str(stack.ports.smtp),
            "--pipeline",
            "--from",
            "carol@elsewhere.test",
            "--to",
            "alice@example.test",
            "--header",
            f"X-Token: {token}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    wait_for(
        lambda: inbox_has(stack, "alice", token),
        timeout=60,
        interval=0.5,
        what="the message in alice's INBOX",
    )
