"""End-to-end fixtures: the six services and nats-server as real processes on free loopback ports."""

from __future__ import annotations

import pytest

from tests.support.dns import DnsServer
from tests.support.stacks import example_test


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One whole stack per test module, with domain example.test and users alice and bob (password
    'alice-pw' / 'bob-pw'). Its resolver asks a DNS server of the test's that knows no name (smtp-ingress
    checks every inbound message's sender: no record of any kind is "none", delivered)."""
    with DnsServer("") as dns:
        with example_test(tmp_path_factory.mktemp("stack"), {"MAILFLOW_RESOLVER_NAMESERVERS": dns.address}) as st:
            yield st
