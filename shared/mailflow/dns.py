"""Asking the resolver service over NATS: `await MxClient(nc).lookup("naver.test")`.

No answer within the timeout (resolver down, NATS away) is a `temp_fail` reply, never an exception:
the caller defers the message and tries again later.
"""

from __future__ import annotations

from typing import Protocol

from nats.aio.client import Client as NATS

from mailflow.contracts import subjects
from mailflow.contracts.messages import MxReply, MxRequest


class Resolver(Protocol):
    async def lookup(self, domain: str) -> MxReply: ...


class MxClient:
    def __init__(self, nc: NATS, timeout: float = 10.0):
        self.nc, self.timeout = nc, timeout

    async def lookup(self, domain: str) -> MxReply:
        try:
            msg = await self.nc.request(subjects.MX_LOOKUP, MxRequest(domain=domain).to_bytes(), timeout=self.timeout)
            return MxReply.from_bytes(msg.data)
        except TimeoutError:
            return MxReply(domain=domain, status="temp_fail", error="resolver did not answer")
        except Exception as exc:  # no responders, connection closed, bad reply
            return MxReply(domain=domain, status="temp_fail", error=f"resolver unavailable: {type(exc).__name__}")
