"""imap-pop3 over the real mailbox-store: nats-server and mailbox-store as processes, once per module and
database (SQLite, and PostgreSQL when MAILFLOW_TEST_POSTGRES_URL is set: a schema of its own, dropped
afterwards), with users alice, bob and carol in example.test (password "<name>-pw"). `srv` is imap-pop3
in the test's process over a StoreClient, with a NATS connection of its own (push, revocations)."""

from __future__ import annotations

import contextlib
import os

import httpx
import pytest
from imaptest import Running, settings_for

from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.stack import Ports, Stack
from mailflow.store.client import StoreClient
from tests.support import postgres_schema


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request, tmp_path_factory):
    """nats-server and mailbox-store as processes, once per module and database (PostgreSQL when
    MAILFLOW_TEST_POSTGRES_URL is set: a schema of its own, dropped afterwards)."""
    tmp = tmp_path_factory.mktemp("store")
    env = {"MAILFLOW_STORE_ARGON2_TIME_COST": "1", "MAILFLOW_STORE_ARGON2_MEMORY_KIB": "1024"}
    with contextlib.ExitStack() as cleanup:
        if request.param == "postgres":
            base = os.environ.get("MAILFLOW_TEST_POSTGRES_URL")
            if not base:
                pytest.skip("MAILFLOW_TEST_POSTGRES_URL is not set")
            env["MAILFLOW_STORE_DATABASE_URL"] = cleanup.enter_context(postgres_schema(base))
        st = Stack(tmp / "stack", Ports.free(), services=("mailbox-store",), env=env)
        cleanup.callback(st.stop)
        st.start()
        with httpx.Client(
            base_url=st.http_url("mailbox-store"), headers={ADMIN_TOKEN_HEADER: st.admin_token}
        ) as c:
            assert c.post("/admin/domains", json={"name": "example.test"}).status_code == 201
            for user in ("alice", "bob", "carol"):
                r = c.post("/admin/users", json={"address": f"{user}@example.test", "password": f"{user}-pw"})
                assert r.status_code == 201, r.text
        yield st


@pytest.fixture
def srv(tmp_path, stack):
    store = StoreClient(stack.http_url("mailbox-store"), stack.service_token)
    running = Running(settings_for(tmp_path), store, nats_url=stack.nats_url, nats_login=stack.nats_login("imap-pop3"))
    yield running
    running.stop()
