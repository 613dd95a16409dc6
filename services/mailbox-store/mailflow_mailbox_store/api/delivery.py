"""Directory and delivery group (header X-Mailflow-Token): resolve, domain, authenticate, sessions, deliver.

POST /internal/deliver takes a mailflow.store.wire frame: header {"items": [{key, recipient, mailbox,
flags, internal_date, queue_id, trace_id}]} and one part per item with the raw message. It answers
{"results": [{key, status, permanent, detail, users}]}, one per item in order, once all are durable.
"""

from __future__ import annotations

from datetime import datetime

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from mailflow.contracts.rest import SERVICE_TOKEN_HEADER
from mailflow.errors import Invalid
from mailflow.store import wire
from mailflow.store.api import DeliverItem
from mailflow.web import require_token

FRAME = {"requestBody": {"content": {wire.CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}}}


class Tokens(BaseModel):
    tokens: list[str] = Field(max_length=1000)


class Login(BaseModel):
    username: str = Field(max_length=1024)
    password: str = Field(max_length=1024)
    service: str = Field("imap", max_length=32)


def _json(data, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def parse_deliver(data: bytes, max_items: int) -> list[DeliverItem]:
    try:
        head, bodies = wire.decode(data)
        metas = head["items"]
        if len(metas) != len(bodies):
            raise ValueError("items and bodies differ in number")
        if len(metas) > max_items:
            raise Invalid(f"at most {max_items} items per call")
        items = []
        for m, body in zip(metas, bodies, strict=True):
            when = m.get("internal_date")
            items.append(
                DeliverItem(
                    key=str(m["key"]),
                    recipient=str(m["recipient"]),
                    body=body,
                    mailbox=str(m.get("mailbox") or "INBOX"),
                    flags=tuple(str(f) for f in m.get("flags") or ()),
                    internal_date=datetime.fromisoformat(when) if when else None,
                    queue_id=str(m.get("queue_id") or ""),
                    trace_id=str(m.get("trace_id") or ""),
                )
            )
        return items
    except (ValueError, KeyError, TypeError) as exc:
        raise Invalid(f"bad deliver frame: {exc}") from exc


def router(store, service_token: str, max_items: int = 1000) -> APIRouter:
    r = APIRouter(
        prefix="/internal", tags=["directory and delivery"],
        dependencies=[Depends(require_token(SERVICE_TOKEN_HEADER, service_token))],
    )  # fmt: skip

    @r.get("/resolve")
    async def resolve(address: str):
        """Where mail to `address` goes: {address, status: local|unknown_user|not_local, users}."""
        res = await store.resolve(address)
        return _json({"address": res.address, "status": res.status, "users": list(res.users)})

    @r.get("/domain")
    async def domain(name: str):
        """{"local": true} if mail for domain `name` is ours: decided by the domain, never by an address."""
        return _json({"local": await store.is_local_domain(name)})

    @r.post("/sessions/check")
    async def check_sessions(body: Tokens):
        """{"expired": [i, ...]}: the indexes of the tokens no longer accepted (revoked, expired, forged)."""
        return _json({"expired": await store.expired_sessions(body.tokens)})

    @r.post("/authenticate")
    async def authenticate(body: Login):
        """{"principal": {user_id, address, addresses, token, generation}} or {"principal": null} for a
        wrong login or a disabled user."""
        p = await store.authenticate(body.username, body.password, body.service)
        if p is None:
            return _json({"principal": None})
        return _json(
            {
                "principal": {
                    "user_id": p.user_id,
                    "address": p.address,
                    "addresses": list(p.addresses),
                    "token": p.token,
                    "generation": p.generation,
                }
            }
        )

    @r.post("/deliver", openapi_extra=FRAME)
    async def deliver(request: Request):
        """Store a batch of messages (see the module docstring for the frame); idempotent per (key, user)."""
        items = parse_deliver(await request.body(), max_items)
        results = await store.deliver(items)
        return _json(
            {
                "results": [
                    {
                        "key": x.key,
                        "status": x.status,
                        "permanent": x.permanent,
                        "detail": x.detail,
                        "users": list(x.users),
                    }
                    for x in results
                ]
            }
        )

    return r
