"""Graceful drain (SIGTERM): stop accepting, let open transactions finish, then 421 and close."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.support import wait_for


def start_drain(s, within: float):
    return asyncio.run_coroutine_threadsafe(s.server.drain(within), s.loop)


def test_idle_sessions_get_421_and_new_connections_are_refused(make_server, raw):
    s = make_server()
    idle = raw(server=s)
    idle.cmd("EHLO client.example.test", "250 ")
    port = s.port()
    start_drain(s, 5).result(10)
    idle.expect("421 4.3.2")
    assert idle.closed()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_open_transaction_finishes_then_421(make_server, raw):
    s = make_server()
    busy = raw(server=s)
    busy.cmd("EHLO client.example.test", "250 ")
    busy.cmd("MAIL FROM:<carol@elsewhere.test>", "250 2.1.0")
    busy.cmd("RCPT TO:<alice@example.test>", "250 2.1.5")
    idle = raw(server=s)
    done = start_drain(s, 10)
    idle.expect("421 4.3.2")
    wait_for(lambda: s.server.draining, what="drain to begin")
    busy.cmd("RCPT TO:<bob@example.test>", "250 2.1.5")  # the transaction goes on
    busy.cmd("DATA", "354 ")
    busy.send_raw(b"Subject: in flight\r\n\r\nfinished during drain\r\n.\r\n")
    busy.expect("250 2.0.0 Ok: queued as")
    busy.expect("421 4.3.2")
    assert busy.closed()
    done.result(10)
    assert len(s.messages) == 1


def test_drain_deadline_closes_what_is_left(make_server, raw):
    s = make_server()
    slow = raw(server=s)
    slow.cmd("EHLO client.example.test", "250 ")
    slow.cmd("MAIL FROM:<carol@elsewhere.test>", "250 2.1.0")
    slow.cmd("RCPT TO:<alice@example.test>", "250 2.1.5")
    slow.cmd("DATA", "354 ")
    slow.send_raw(b"Subject: never ends\r\n\r\n")
    start_drain(s, 0.3).result(10)
    slow.expect("421 4.3.2")
    assert slow.closed() and s.messages == []
