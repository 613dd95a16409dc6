"""Pull requests to one durable JetStream consumer: a message is handed over as soon as it is stored.

Why not nats-py's `PullSubscription.fetch`: every request of one subscription answers on the same
inbox, so the "408 Request Timeout" that ends one request can arrive just after the client gave up on
it and be read by the next fetch as its own answer. That fetch then sends a second, lingering request
and, once a message comes, waits for the rest of its batch until its whole timeout is over: a message
arriving at an idle moment waited up to a second per hop (measured: 250 -> stored p90 242 ms at light
load, p50 13 ms).

Here each request has its own reply subject under one wildcard subscription, so a status line is
matched to its request and stale ones are ignored. One request per fetch, the server's long poll
(`no_wait` with `expires`, NATS 2.10+): it waits up to `expires` for the first message, then sends
every message already there (up to `batch`) and "404 No Messages". Messages are ours whatever request
brought them (a late one is handed out by the next fetch); JetStream redelivers any we never ack.
"""

from __future__ import annotations

import asyncio
import json

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.client import DEFAULT_JS_SUB_PENDING_BYTES_LIMIT, DEFAULT_JS_SUB_PENDING_MSGS_LIMIT

STATUS = "Status"
DONE = {"404", "408"}  # no (more) messages for this request / it expired
HEARTBEAT = "100"


class PullRefused(Exception):
    """The server refused or ended a pull request for another reason (409: consumer deleted, too many
    waiting requests, leadership change...)."""


class Puller:
    def __init__(self, nc: NATS, stream: str, durable: str):
        self.nc = nc
        self.api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._prefix = nc.new_inbox()
        self._n = 0
        self._sub = None

    async def start(self) -> Puller:
        if self._sub is None:
            self._sub = await self.nc.subscribe(  # the limits nats-py gives its own pull subscriptions
                self._prefix + ".*",
                pending_msgs_limit=DEFAULT_JS_SUB_PENDING_MSGS_LIMIT,
                pending_bytes_limit=DEFAULT_JS_SUB_PENDING_BYTES_LIMIT,
            )
        return self

    async def fetch(self, batch: int, wait: float | None) -> list[Msg]:
        """Up to `batch` messages: what is there now, or, with `wait`, the first to arrive within `wait`
        seconds and what is there with it. [] when none came."""
        self._n += 1
        reply = f"{self._prefix}.{self._n}"
        req: dict = {"batch": batch, "no_wait": True}
        if wait and not self._sub.pending_msgs:  # with messages in hand (a late answer), do not wait
            req["expires"] = int(wait * 1e9)
        await self.nc.publish(self.api, json.dumps(req).encode(), reply=reply)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (wait or 0) + 1.0  # the server's answer ends a request; this is a guard
        msgs: list[Msg] = []
        while len(msgs) < batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                m = await self._sub.next_msg(timeout=remaining)
            except TimeoutError:
                break
            status = m.headers.get(STATUS) if m.headers else None
            if status is None:
                msgs.append(m)
            elif m.subject != reply or status == HEARTBEAT:
                continue  # the end of an earlier request, or a heartbeat
            elif status in DONE:
                break
            elif msgs:
                break
            else:
                raise PullRefused(f"{status} {m.headers.get('Description', '')}".strip())
        return msgs

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception:  # the connection is closing anyway
                pass
