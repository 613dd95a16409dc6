"""The whole stack (nats-server and the six services as processes) for imap-pop3's end-to-end tests,
with domain example.test and users alice, bob, carol, dave (password "<name>-pw")."""

from __future__ import annotations

import httpx
import pytest

from mailflow.contracts.rest import ADMIN_TOKEN_HEADER
from mailflow.stack import Ports, Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    st = Stack(tmp_path_factory.mktemp("stack"), Ports.free()).start()
    try:
        headers = {ADMIN_TOKEN_HEADER: st.admin_token}
        with httpx.Client(base_url=st.http_url("mailbox-store"), headers=headers, timeout=30) as c:
            assert c.post("/admin/domains", json={"name": "example.test"}).status_code == 201
            for user in ("alice", "bob", "carol", "dave"):
                r = c.post("/admin/users", json={"address": f"{user}@example.test", "password": f"{user}-pw"})
                assert r.status_code == 201, r.text
        yield st
    finally:
        st.stop()
