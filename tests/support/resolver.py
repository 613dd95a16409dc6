"""The real resolver service for the checks of `mailflow.authn`, asking a DNS server the test starts:

    with DnsServer(ZONE) as server:
        async with resolver_service(nats_url, server, probe=("mail.sender.test", "A")) as client:
            await check_host(client, ...)              # client: mailflow.dns.DnsClient over real NATS

It runs the resolver's app in this event loop, waits until `probe` is answered "ok" (then forgets the
probe's question in `server.queries`), and stops the service afterwards. Settings beyond the DNS server
and short timeouts (0.3 s per try, 0.8 s in all) come as keyword arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from mailflow import natsconn
from mailflow.dns import DnsClient
from mailflow_resolver import app
from mailflow_resolver.settings import Settings
from tests.support import await_for, free_port
from tests.support.dns import DnsServer


@contextlib.asynccontextmanager
async def resolver_service(nats_url: str, server: DnsServer, probe: tuple[str, str], **settings) -> AsyncIterator[DnsClient]:
    settings = {"timeout": 0.3, "lifetime": 0.8} | settings
    config = Settings(nats_url=nats_url, service_token="s3cret", http_listen=f"127.0.0.1:{free_port()}", nameservers=server.address, **settings)
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(config, stop))
    nc = await natsconn.connect(nats_url, "test")
    client = DnsClient(nc, timeout=5)

    async def answering() -> bool:
        return (await client.query(*probe)).status == "ok"

    try:
        await await_for(answering, what="the resolver answers dns.query")
        server.queries.clear()
        yield client
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await natsconn.close(nc)
