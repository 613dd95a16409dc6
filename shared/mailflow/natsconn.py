"""Connecting to NATS: keep trying at startup, reconnect forever afterwards, drain on shutdown.

If NATS is away at startup, `connect` retries with backoff until `initial_timeout` passes, then raises
`ServiceUnavailable`. Afterwards nats-py reconnects on its own and buffers what is published meanwhile;
JetStream publishes that cannot be acknowledged raise, and callers answer 4xx (nothing is lost).

`reconnect_buffer=False` is for a publisher whose PubAck decides a client's answer (smtp-ingress: 250
or 451). nats-py sends after a reconnect both what was published while disconnected and what was still
unsent in its write buffer when the connection dropped; such a message would be stored after its
client was told 451, and the client's retry would store it twice. Without the buffer a publish while
disconnected raises `OutboundBufferLimitError` at once, and what is unsent at a disconnect is dropped
(its PubAck never comes: the publisher times out and answers 4xx). What nats-py had handed to the
socket before may still be stored: the ambiguous case of RFC 1047.

`user` and `password` are the service's NATS credentials (empty: none); its replies come to its own
inbox, `_INBOX.<name>.>`, the only one its user may subscribe to (`contracts.permissions`). A wrong
password is treated like an absent server; each attempt logs the server's reason ("Authorization Violation").
"""

from __future__ import annotations

import asyncio
import logging

import nats
from nats.aio.client import Client as NATS

from mailflow.contracts.permissions import inbox
from mailflow.errors import ServiceUnavailable

log = logging.getLogger(__name__)


async def connect(
    url: str, name: str, initial_timeout: float = 30.0, reconnect_buffer: bool = True, user: str = "", password: str = ""
) -> NATS:
    client: list[NATS] = []  # the connection, for disconnected_cb

    async def error_cb(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    async def disconnected_cb() -> None:
        log.warning("nats disconnected")
        if not reconnect_buffer and client:
            # nats-py calls this after closing the socket and before reconnecting: nothing unsent goes
            # out later. It has no public call for this.
            client[0]._pending, client[0]._pending_data_size = [], 0

    async def reconnected_cb() -> None:
        log.info("nats reconnected")

    # nats-py retries a first connect by itself, forever when reconnecting is allowed (and after an
    # authorization error too): `initial_timeout` bounds the whole attempt.
    try:
        nc = await asyncio.wait_for(
            nats.connect(
                servers=url.split(","),
                name=name,
                user=user or None,
                password=password or None,
                inbox_prefix=inbox(name),
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                ping_interval=10,
                max_outstanding_pings=3,
                pending_size=64 * 1024 * 1024 if reconnect_buffer else 0,
                error_cb=error_cb,
                disconnected_cb=disconnected_cb,
                reconnected_cb=reconnected_cb,
            ),
            initial_timeout,
        )
    except Exception as exc:  # asyncio.TimeoutError included
        raise ServiceUnavailable(f"NATS at {url} did not answer within {initial_timeout:g} s: {exc!r}") from exc
    client.append(nc)
    return nc


async def close(nc: NATS | None) -> None:
    """Drain (finish in-flight messages, flush publishes), then close. Never raises."""
    if nc is None or nc.is_closed:
        return
    # Subscriptions read with next_msg()/fetch() (JetStream pull consumers) never mark their messages
    # done, so drain() would wait for them until its timeout: unsubscribe those first. Callback
    # subscriptions (request handlers) are drained properly: the replies in progress are sent.
    for sub in list(getattr(nc, "_subs", {}).values()):
        if getattr(sub, "_cb", None) is None:
            try:
                await sub.unsubscribe()
            except Exception:
                pass
    try:
        await asyncio.wait_for(nc.drain(), timeout=10)
    except Exception as exc:
        log.warning("nats drain: %s", exc)
        try:
            await nc.close()
        except Exception:
            pass
