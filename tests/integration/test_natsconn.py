"""mailflow.natsconn against a real nats-server that goes away: what a connection without a reconnect
buffer (`reconnect_buffer=False`, smtp-ingress) never sends after the reconnect."""

from __future__ import annotations

import asyncio
import os
import signal

import nats.errors
import pytest

from mailflow import natsconn
from mailflow.contracts import subjects
from mailflow.errors import ServiceUnavailable
from tests.support import await_for, free_port

CHUNK = 512 * 1024


async def stored(js) -> int:
    return (await js.stream_info("BODY")).state.messages


def stopped(pid: int) -> bool:
    """The process is stopped by a signal (state T in /proc/PID/stat, after the command in parentheses)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def now(check):
    """`check` as the awaitable predicate of await_for."""

    async def pred() -> object:
        return check()

    return pred


async def test_a_publish_while_disconnected_raises_at_once(nats_server, js):
    nc = await natsconn.connect(nats_server.url, "publisher", reconnect_buffer=False)
    try:
        nats_server.kill()
        await await_for(now(lambda: not nc.is_connected), what="disconnect noticed")
        with pytest.raises(nats.errors.OutboundBufferLimitError):
            await nc.publish(subjects.body("Q1", 0), b"x")
        nats_server.start()
        await await_for(now(lambda: nc.is_connected and js._nc.is_connected), timeout=30, what="reconnected")
        await nc.flush()
        assert await stored(js) == 0
    finally:
        await natsconn.close(nc)


@pytest.mark.parametrize("reconnect_buffer", [False, True])
async def test_what_was_unsent_when_the_connection_dropped(nats_server, js, reconnect_buffer):
    """The server stops reading (SIGSTOP): the socket fills, nats-py's flusher waits, and the next
    publishes stay in its write buffer. Then the server dies (SIGKILL: what it had not read dies with
    it) and starts again. With the buffer nats-py sends them after the reconnect; without, nothing."""
    nc = await natsconn.connect(nats_server.url, "publisher", reconnect_buffer=reconnect_buffer)
    try:
        os.kill(nats_server.proc.pid, signal.SIGSTOP)
        # The signal is only queued: the server may still read and store a publish until it has stopped.
        await await_for(now(lambda: stopped(nats_server.proc.pid)), what="the server stopped")
        n = 0
        while nc.pending_data_size < 4 * CHUNK:  # reached only once the flusher is stuck
            await nc.publish(subjects.body("Q1", n), b"x" * CHUNK)
            await asyncio.sleep(0)  # not a wait: lets the flusher write what the socket takes
            n += 1
            assert n < 128, "the socket never filled"
        nats_server.kill()
        await await_for(now(lambda: not nc.is_connected), what="disconnect noticed")
        nats_server.start()
        await await_for(now(lambda: nc.is_connected and js._nc.is_connected), timeout=30, what="reconnected")
        await nc.flush()
        assert (await stored(js) > 0) == reconnect_buffer
    finally:
        await natsconn.close(nc)


async def test_a_server_that_never_answers_is_reported_after_initial_timeout():
    """nats-py retries its first connect forever when reconnecting is allowed: `initial_timeout` bounds it,
    so a service told the wrong address or password stops with a clear error instead of hanging."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ServiceUnavailable, match="did not answer"):
        await natsconn.connect(f"nats://127.0.0.1:{free_port()}", "publisher", initial_timeout=1.5)
    assert loop.time() - started < 5

