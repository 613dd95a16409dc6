"""Fixtures every test folder can use: a real nats-server with JetStream, databases, the real
mailbox-store in this process (`store`), free ports.

No test asks the machine's DNS (it is not on loopback, and the internet's DNS is not the tests'): for
the whole session, MAILFLOW_RESOLVER_NAMESERVERS points at a DNS server of the tests' own that knows
no name (NXDOMAIN for all: an inbound message's sender checks come out "none"), unless the run sets it.
Every resolver a Stack starts inherits it; a test that needs records starts its own server and says so."""

from __future__ import annotations

import os

import pytest

from mailflow.natsserver import NatsServer
from tests.support import free_port, postgres_schema, stacks

stacks.track()


@pytest.fixture(scope="session", autouse=True)
def no_machine_dns():
    if os.environ.get("MAILFLOW_RESOLVER_NAMESERVERS"):
        yield
        return
    from tests.support.dns import DnsServer

    with DnsServer("") as dns:
        os.environ["MAILFLOW_RESOLVER_NAMESERVERS"] = dns.address
        try:
            yield
        finally:
            del os.environ["MAILFLOW_RESOLVER_NAMESERVERS"]


@pytest.fixture
def nats_server(tmp_path):
    """A private nats-server with JetStream (file storage in tmp, fsync on every write), on a free port."""
    server = NatsServer(tmp_path / "nats", port=free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server) -> str:
    return nats_server.url


@pytest.fixture
async def js(nats_url):
    """A NATS connection's JetStream context with Mailflow's streams applied."""
    from mailflow import natsconn
    from mailflow.contracts.streams import ensure_streams

    nc = await natsconn.connect(nats_url, "test")
    ctx = nc.jetstream()
    await ensure_streams(ctx)
    yield ctx
    await natsconn.close(nc)


def postgres_url() -> str | None:
    return os.environ.get("MAILFLOW_TEST_POSTGRES_URL") or None


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    """A fresh, empty database URL: SQLite in tmp, and PostgreSQL when MAILFLOW_TEST_POSTGRES_URL is set
    (a schema of its own per test, dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    base = postgres_url()
    if not base:
        pytest.skip("MAILFLOW_TEST_POSTGRES_URL is not set")
    with postgres_schema(base) as url:
        yield url


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL schema's URL (see db_url); skips the test when MAILFLOW_TEST_POSTGRES_URL is not
    set: for what only PostgreSQL does (several processes on one database, pg_dump)."""
    base = postgres_url()
    if not base:
        pytest.skip("MAILFLOW_TEST_POSTGRES_URL is not set")
    with postgres_schema(base) as url:
        yield url


@pytest.fixture(scope="session")
def local_store():
    """mailbox-store's real code in this process, started once per session (tests/support/store.py)."""
    from tests.support.store import LocalStore

    with LocalStore.running() as s:
        yield s


@pytest.fixture(scope="session")
def rspamd():
    """A real rspamd with its own Redis, started once per session (tests/support/rspamd.py)."""
    from tests.support import rspamd as support

    why = support.available()
    if why:
        pytest.skip(why)
    with support.Rspamd.running() as r:
        yield r


@pytest.fixture
def store(local_store):
    """An empty real mailbox-store and a StoreClient to it (`TestStore`: add_user, messages, ...)."""
    return local_store.fresh()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test that had whole stacks running also reports which of their processes had died
    (exit code and log tail): a refused connection then says why, even on a CI machine long gone."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        text = stacks.post_mortem()
        if text:
            report.sections.append(("stack processes that had exited", text))
