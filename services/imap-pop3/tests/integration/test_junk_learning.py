"""Spam training through the real stack: IMAP MOVE/COPY into and out of Junk (imap-pop3 -> mailbox-store,
a process) teaches a real rspamd (tests/support/rspamd.py, Bayes in its Redis) spam and ham, as its
controller's /stat shows; a move into Trash teaches nothing."""

from __future__ import annotations

import contextlib
import imaplib
import re

import httpx
import pytest
from imaptest import make_message

from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.stack import Ports, Stack
from tests.support import wait_for

WORDS = "quarterly invoice overdue payment transfer account verify urgent winner prize claim offer today"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, rspamd):
    """mailbox-store (a process) that trains `rspamd`, with alice in example.test."""
    env = {
        "MAILFLOW_STORE_ARGON2_TIME_COST": "1",
        "MAILFLOW_STORE_ARGON2_MEMORY_KIB": "1024",
        "MAILFLOW_STORE_RSPAMD_URL": rspamd.controller_url,
        "MAILFLOW_STORE_RSPAMD_PASSWORD": rspamd.password,
    }
    st = Stack(tmp_path_factory.mktemp("learning") / "stack", Ports.free(), services=("mailbox-store",), env=env)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(st.stop)
        st.start()
        with httpx.Client(base_url=st.http_url("mailbox-store"), headers={ADMIN_TOKEN_HEADER: st.admin_token}) as c:
            assert c.post("/admin/domains", json={"name": "example.test"}).status_code == 201
            r = c.post("/admin/users", json={"address": "alice@example.test", "password": "alice-pw"})
            assert r.status_code == 201, r.text
        yield st


def learned(stack: Stack) -> dict[tuple[str, str], float]:
    """mailbox-store's mailflow_mailbox_store_rspamd_learn_total, by (kind, result)."""
    text = httpx.get(stack.http_url("mailbox-store") + "/metrics").text
    found = re.findall(r'^mailflow_mailbox_store_rspamd_learn_total\{kind="(\w+)",result="(\w+)"\} (\S+)$', text, re.M)
    return {(k, r): float(v) for k, r, v in found}


def test_moving_into_junk_learns_spam_and_out_of_it_ham(srv, stack, rspamd):
    before = rspamd.stat()["learned"]  # rspamd's own count of messages it learned
    for i in range(3):
        srv.deliver("alice@example.test", make_message(f"offer {i}", body=f"{WORDS} number {i}\n" * 3))
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    m.login("alice@example.test", "alice-pw")
    m.select("INBOX")
    assert m.uid("MOVE", "1:2", "Junk")[0] == "OK"  # two spam
    assert m.uid("COPY", "3", "Junk")[0] == "OK"  # COPY counts too
    wait_for(lambda: learned(stack).get(("spam", "learned")) == 3, what="3 learned as spam")
    assert rspamd.stat()["learned"] == before + 3

    m.select("Junk")
    assert m.uid("MOVE", "1", "INBOX")[0] == "OK"  # a mistake: back to the inbox, ham
    assert m.uid("MOVE", "2", "Trash")[0] == "OK"  # deleted: no verdict
    wait_for(lambda: learned(stack).get(("ham", "learned")) == 1, what="1 learned as ham")
    assert rspamd.stat()["learned"] == before + 4
    assert sum(v for (kind, _), v in learned(stack).items()) == 4
    m.logout()
