"""Our MTA-STS policy (RFC 8461 §3.2), served over HTTPS to the senders who look it up.

`GET /.well-known/mta-sts.txt` with `Host: mta-sts.<domain>` answers the policy built from
MAILFLOW_SMTP_MTA_STS_* (`mailflow.mtasts.published`: the same text, and so the same id, that
`mailflow dns records` prints in the TXT record) as text/plain, for every domain the mailbox-store
knows as ours. Another host name or a domain that is not ours: 404 (so a name pointing here by
mistake publishes no policy for someone else's domain); the listener serves nothing but this and the
autoconfiguration (autoconfig.py), whose routes app.py adds. The store not answering:
503, which a sender treats as a failed fetch and keeps its cached policy (RFC 8461 §5.1).
Redirects are never answered (senders must not follow them, §3.3).

Why here: smtp-ingress already holds the mail listeners' certificate (MAILFLOW_TLS_CERT/KEY, which
then also names mta-sts.<domain>), knows our hostname and asks the store which domains are ours;
the policy describes its own MX listener. The listener is off unless a port is
set (MAILFLOW_SMTP_HTTPS_PORT, on the MX listener's address: 443 where that port is published; a
reverse proxy may instead forward mta-sts.<domain> to it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from mailflow import mtasts
from mailflow.cache import Cache, SingleFlight

log = logging.getLogger(__name__)

IsLocalDomain = Callable[[str], Awaitable[bool]]


class LocalDomains:
    """Is this domain ours? The store's answer kept `ttl` seconds (a "no" `negative_ttl`)."""

    def __init__(self, ask: IsLocalDomain, ttl: float = 60.0, negative_ttl: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.ask, self.ttl, self.negative_ttl = ask, ttl, negative_ttl
        self.items: Cache[str, bool] = Cache(10_000, clock)
        self._flights: SingleFlight[str, bool] = SingleFlight()

    async def __call__(self, domain: str) -> bool:
        hit = self.items.get(domain)
        if hit is not None:
            return hit
        return await self._flights.run(domain, lambda: self._fetch(domain))

    async def _fetch(self, domain: str) -> bool:
        ours = await self.ask(domain)
        self.items.put(domain, ours, self.ttl if ours else self.negative_ttl)
        return ours


def policy_app(policy: mtasts.Policy, is_local: IsLocalDomain) -> FastAPI:
    """The HTTPS app with the policy (app.py adds the autoconfiguration's routes); no docs or OpenAPI schema."""
    app = FastAPI(title="mailflow mta-sts", docs_url=None, redoc_url=None, openapi_url=None)
    text = policy.text()

    @app.get(mtasts.WELL_KNOWN)
    async def serve(request: Request) -> PlainTextResponse:
        host = request.headers.get("host", "").partition(":")[0].lower().removesuffix(".")
        domain = host.removeprefix("mta-sts.")
        if not host.startswith("mta-sts.") or not domain or len(host) > 253:
            return PlainTextResponse("no MTA-STS policy for this name\n", status_code=404)
        try:
            ours = await is_local(domain)
        except Exception as exc:  # the store does not answer: the sender keeps what it has
            log.warning("MTA-STS policy not served: domain lookup failed: %s", exc, extra={"domain": domain})
            return PlainTextResponse("try again later\n", status_code=503)
        if not ours:
            return PlainTextResponse("no MTA-STS policy for this name\n", status_code=404)
        return PlainTextResponse(text, headers={"Cache-Control": f"max-age={min(policy.max_age, 3600)}"})

    return app
