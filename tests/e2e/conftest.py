"""End-to-end fixtures: the six services and nats-server as real processes on free loopback ports."""

from __future__ import annotations

import pytest

from mailflow.stack import Ports, Stack
from tests.support.dns import DnsServer


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One whole stack per test module, with domain example.test and users alice and bob (password
    'alice-pw' / 'bob-pw'). Its resolver asks a DNS server of the test's that knows no name (smtp-ingress
    checks every inbound message's sender: no record of any kind is "none", delivered)."""
    with DnsServer("") as dns:
        st = Stack(tmp_path_factory.mktemp("stack"), Ports.free(), env={"MAILFLOW_RESOLVER_NAMESERVERS": dns.address}).start()
        try:
            st.cli("domain", "add", "example.test")
            st.cli("user", "add", "alice@example.test", "--password", "alice-pw")
            st.cli("user", "add", "bob@example.test", "--password", "bob-pw")
            yield st
        finally:
            st.stop()
