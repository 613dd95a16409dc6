"""Kubernetes-grade listeners: PROXY protocol v1/v2 (the real client address counts), the drain on
SIGTERM (stop accepting, BYE to IDLE and waiting clients, let running commands finish), and metrics."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from imaptest import Raw, Running, make_message, settings_for
from prometheus_client import REGISTRY

from mailflow.proxy_protocol import encode_v1, encode_v2


@pytest.fixture
def proxied(tmp_path, store):
    running = Running(settings_for(tmp_path, proxy_protocol=True, proxy_trusted="127.0.0.0/8"), store)
    yield running
    running.stop()


def test_proxy_v1_and_local(proxied):
    c = Raw("127.0.0.1", proxied.port("imap"))
    c.send_raw(encode_v1(("198.51.100.20", 5000), ("198.51.100.1", 143)))
    assert b"LOGINDISABLED" in c.line()  # the client is on the internet now
    c = Raw("127.0.0.1", proxied.port("imap"))
    c.send_raw(encode_v2(None))  # LOCAL: the proxy's own health check, the socket address counts
    assert b"AUTH=PLAIN" in c.line()
    c = Raw("127.0.0.1", proxied.port("pop3"))
    c.send_raw(b"GET / HTTP/1.0\r\n\r\n")
    assert c.closed() and c.buf == b""


def test_proxy_from_an_untrusted_peer_is_closed(tmp_path, store):
    running = Running(settings_for(tmp_path, proxy_protocol=True, proxy_trusted="10.0.0.0/8"), store)
    try:
        c = Raw("127.0.0.1", running.port("imap"))
        c.send_raw(encode_v2(("192.0.2.1", 1), ("192.0.2.2", 143)))
        assert c.closed() and c.buf == b""
    finally:
        running.stop()


def test_drain_says_bye_lets_commands_finish_and_stops_accepting(tmp_path, store):
    running = Running(settings_for(tmp_path), store)
    try:
        running.deliver("alice@example.test", make_message("x"))
        waiting = Raw("127.0.0.1", running.port("imap"))
        waiting.line()
        idler = Raw("127.0.0.1", running.port("imap"))
        idler.line()
        idler.cmd("a1", "LOGIN alice@example.test alice-pw")
        idler.cmd("a2", "SELECT INBOX")
        idler.send("a3 IDLE")
        assert idler.line() == b"+ idling"
        pop = Raw("127.0.0.1", running.port("pop3"))
        pop.line()
        busy = Raw("127.0.0.1", running.port("imap"))
        busy.line()
        running.deliver("bob@example.test", make_message("x"))  # a message to search: the store is asked
        busy.cmd("b1", "LOGIN bob@example.test bob-pw")
        busy.cmd("b2", "SELECT INBOX")

        slow_started = threading.Event()
        original = store.search

        async def slow_search(*args):
            slow_started.set()
            await asyncio.sleep(0.5)
            return await original(*args)

        store.search = slow_search
        busy.send("b3 SEARCH SUBJECT x")
        assert slow_started.wait(5)
        port = running.port("imap")
        drained = threading.Thread(target=running.call, args=(running.server.drain(5),))
        t0 = time.monotonic()
        drained.start()
        assert idler.line() == b"* BYE Server shutting down, please reconnect"
        assert waiting.line() == b"* BYE Server shutting down, please reconnect"
        assert pop.line() == b"-ERR [SYS/TEMP] Server shutting down, please reconnect"
        assert busy.line() == b"* SEARCH 1"  # the running command finished...
        assert busy.line() == b"b3 OK SEARCH completed"
        assert busy.line() == b"* BYE Server shutting down, please reconnect"  # ...then BYE
        for c in (idler, waiting, pop, busy):
            assert c.closed()
        drained.join(10)
        assert time.monotonic() - t0 < 3
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).recv(1)
    finally:
        running.loop.call_soon_threadsafe(running.loop.stop)
        running.thread.join(5)


def test_metrics_count_sessions_commands_logins(srv):
    before = (
        REGISTRY.get_sample_value("mailflow_imap_logins_total", {"protocol": "imap", "result": "ok"}) or 0
    )
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.cmd("a1", "LOGIN alice@example.test alice-pw")
    c.cmd("a2", "SELECT INBOX")
    c.cmd("a3", "FROB")
    c.cmd("a4", "LOGOUT")
    assert (
        REGISTRY.get_sample_value("mailflow_imap_logins_total", {"protocol": "imap", "result": "ok"})
        == before + 1
    )
    assert (
        REGISTRY.get_sample_value(
            "mailflow_imap_commands_total", {"protocol": "imap", "cmd": "SELECT", "result": "ok"}
        )
        >= 1
    )
    assert (
        REGISTRY.get_sample_value(
            "mailflow_imap_commands_total", {"protocol": "imap", "cmd": "unknown", "result": "bad"}
        )
        >= 1
    )
    assert (
        REGISTRY.get_sample_value(
            "mailflow_imap_command_duration_seconds_count", {"protocol": "imap", "cmd": "SELECT"}
        )
        >= 1
    )
    assert (
        REGISTRY.get_sample_value("mailflow_imap_sessions_total", {"protocol": "imap", "listener": "plain"})
        >= 1
    )


def test_start_tls_drops_what_the_stream_holds_unread(tmp_path):
    """Octets pipelined behind STARTTLS and already in the stream's buffer (here: left there by a
    readline) must not be read after the switch as if the client had sent them inside TLS."""
    from imaptest import client_tls, new_loop, tls_pair

    from mailflow import tls
    from mailflow_imap_pop3.listener import Listener

    ctx = tls.server_context(*tls_pair(tmp_path))
    got: list[bytes] = []

    async def handler(conn):
        assert await conn.reader.readline() == b"a1 STARTTLS\r\n"
        dropped = await conn.start_tls(ctx, b"a1 OK Begin TLS negotiation now\r\n")
        got.append(b"dropped %d" % dropped)
        got.append(await conn.read())

    loop = new_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        listener = asyncio.run_coroutine_threadsafe(
            Listener("imap", "127.0.0.1:0", handler).start(), loop
        ).result(10)
        c = Raw("127.0.0.1", listener.port)
        c.send_raw(b"a1 STARTTLS\r\na2 LOGIN alice@example.test alice-pw\r\n")
        assert c.line() == b"a1 OK Begin TLS negotiation now"
        sock = client_tls().wrap_socket(c.sock)
        sock.sendall(b"a3 CAPABILITY\r\n")
        sock.recv(1)  # the handler closes the connection once it has read
        assert got == [b"dropped 38", b"a3 CAPABILITY\r\n"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


# --- connection caps (issue 12.5) ----------------------------------------------------------------------


@pytest.fixture
def capped(tmp_path, store):
    running = Running(settings_for(tmp_path, max_connections_per_ip=2, max_connections=3), store)
    yield running
    running.stop()


def test_connections_per_client_are_capped_on_every_listener(capped):
    from imaptest import client_tls

    from tests.support import wait_for

    first = Raw("127.0.0.1", capped.port("imap"))
    assert first.line().startswith(b"* OK")
    second = Raw("127.0.0.1", capped.port("pop3"))
    assert second.line() == b"+OK Mailflow POP3 ready"
    third = Raw("127.0.0.1", capped.port("imap"))
    assert third.line() == b"* BYE Too many connections from your address, try again later"
    assert third.closed()
    third = Raw("127.0.0.1", capped.port("pop3"))
    assert third.line() == b"-ERR [SYS/TEMP] Too many connections from your address, try again later"
    assert third.closed()
    third = Raw("127.0.0.1", capped.port("imaps"), context=client_tls())
    assert third.line() == b"* BYE Too many connections from your address, try again later"
    assert third.closed()
    third = Raw("127.0.0.1", capped.port("pop3s"), context=client_tls())
    assert third.line().startswith(b"-ERR [SYS/TEMP] Too many connections from your address")
    first.cmd("a1", "LOGOUT")
    wait_for(lambda: capped.server.limiter.total == 1, what="the closed connection to be released")
    again = Raw("127.0.0.1", capped.port("imaps"), context=client_tls())
    assert again.line().startswith(b"* OK")


def test_caps_count_the_client_behind_the_proxy_and_the_total(tmp_path, store):
    """At the total cap the oldest session that has not logged in is evicted for the new one; once
    every session has logged in, the new one is refused."""
    running = Running(
        settings_for(
            tmp_path, proxy_protocol=True, proxy_trusted="127.0.0.0/8", max_connections_per_ip=1, max_connections=2,
            allow_plaintext_auth=True,
        ),
        store,
    )  # fmt: skip
    try:

        def via_proxy(ip: str, name: str = "imap") -> Raw:
            c = Raw("127.0.0.1", running.port(name))
            c.send_raw(encode_v2((ip, 40000), ("198.51.100.1", 143)))
            return c

        first = via_proxy("192.0.2.1")
        assert first.line().startswith(b"* OK")
        refused = via_proxy("192.0.2.1")  # the proxy's address is the same for all: the client counts
        assert refused.line() == b"* BYE Too many connections from your address, try again later"
        second = via_proxy("192.0.2.2", "pop3")
        assert second.line() == b"+OK Mailflow POP3 ready"
        third = via_proxy("192.0.2.3")
        assert third.line().startswith(b"* OK")
        assert (
            first.line() == b"* BYE [UNAVAILABLE] Too many connections, closing an idle one, try again later"
        )
        assert first.closed()
        assert third.cmd("a1", "LOGIN alice@example.test alice-pw")[-1].startswith(b"a1 OK")
        fourth = via_proxy("192.0.2.4", "pop3")
        assert fourth.line() == b"+OK Mailflow POP3 ready"
        assert second.line() == b"-ERR [SYS/TEMP] Too many connections, closing an idle one, try again later"
        fourth.send("USER alice@example.test")
        assert fourth.line().startswith(b"+OK")
        fourth.send("PASS alice-pw")
        assert fourth.line().startswith(b"+OK")
        busy = via_proxy("192.0.2.5")
        assert busy.line() == b"* BYE Too many connections, try again later"
        busy = via_proxy("192.0.2.5", "pop3")
        assert busy.line() == b"-ERR [SYS/TEMP] Too many connections, try again later"
    finally:
        running.stop()
