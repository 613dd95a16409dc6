"""Directory and delivery group (header X-Mailflow-Token): resolve, domain, authenticate, scram, sessions,
deliver, dkim.

The shapes are the contract models of mailflow.contracts.rest (StoreClient uses the same ones).
POST /internal/deliver takes a mailflow.store.wire frame: header DeliverRequest, one part per item with
the raw message; it answers DeliverResponse, one result per item in order, once all are durable.
"""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel

from mailflow.contracts.rest import (
    SERVICE_TOKEN_HEADER,
    Authenticated,
    DeliverRequest,
    DeliverResponse,
    DkimSigning,
    DomainLocal,
    Login,
    PrincipalOut,
    Resolved,
    ScramDone,
    ScramFinish,
    ScramSalt,
    ScramStart,
    SessionCheck,
    SessionsExpired,
)
from mailflow.errors import Invalid
from mailflow.store import wire
from mailflow.store.api import DeliverItem
from mailflow.web import require_token

FRAME = {"requestBody": {"content": {wire.CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}}}


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


def parse_deliver(data: bytes, max_items: int) -> list[DeliverItem]:
    try:
        head, bodies = wire.decode(data)
        request = DeliverRequest.model_validate(head)
        if len(request.items) > max_items:
            raise Invalid(f"at most {max_items} items per call")
        return request.with_bodies(bodies)
    except (ValueError, KeyError, TypeError) as exc:
        raise Invalid(f"bad deliver frame: {exc}") from exc


def router(store, service_token: str, max_items: int = 1000) -> APIRouter:
    r = APIRouter(
        prefix="/internal", tags=["directory and delivery"],
        dependencies=[Depends(require_token(SERVICE_TOKEN_HEADER, service_token))],
    )  # fmt: skip

    @r.get("/resolve", response_model=Resolved)
    async def resolve(address: str):
        """Where mail to `address` goes: local (to `users`), unknown_user or not_local."""
        return _json(Resolved.of(await store.resolve(address)))

    @r.get("/domain", response_model=DomainLocal)
    async def domain(name: str):
        """Is mail for domain `name` ours? Decided by the domain, never by an address."""
        return _json(DomainLocal(local=await store.is_local_domain(name)))

    @r.get("/dkim", response_model=DkimSigning)
    async def dkim(domain: str):
        """The key set delivery signs mail from `domain` with: its own active one or its nearest parent's."""
        return _json(DkimSigning(key=await store.dkim_signing_key(domain)))

    @r.post("/sessions/check", response_model=SessionsExpired)
    async def check_sessions(body: SessionCheck):
        """The indexes of the tokens no longer accepted (revoked, expired, forged)."""
        return _json(SessionsExpired(expired=await store.expired_sessions(body.tokens)))

    @r.post("/authenticate", response_model=Authenticated)
    async def authenticate(body: Login):
        """The principal, or null for a wrong login or a disabled user."""
        p = await store.authenticate(body.username, body.password, body.service)
        return _json(Authenticated(principal=None if p is None else PrincipalOut.of(p)))

    @r.post("/scram/start", response_model=ScramSalt)
    async def scram_start(body: ScramStart):
        """SCRAM-SHA-256's salt and iteration count of a user (a stable made-up salt for one that has no
        verifier, is unknown or disabled: the answer does not say which)."""
        salt, iterations = await store.scram_start(body.username)
        return _json(ScramSalt(salt=base64.b64encode(salt).decode(), iterations=iterations))

    @r.post("/scram/finish", response_model=ScramDone)
    async def scram_finish(body: ScramFinish):
        """The principal and the server signature if the client's proof checks out, else null."""
        try:
            proof = base64.b64decode(body.client_proof, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Invalid("client_proof is not base64") from exc
        done = await store.scram_finish(body.username, body.auth_message.encode(), proof, body.service)
        if done is None:
            return _json(ScramDone(principal=None))
        principal, signature = done
        return _json(
            ScramDone(principal=PrincipalOut.of(principal), server_signature=base64.b64encode(signature).decode())
        )

    @r.post("/deliver", openapi_extra=FRAME, response_model=DeliverResponse)
    async def deliver(request: Request):
        """Store a batch of messages (see the module docstring for the frame); idempotent per (key, user)."""
        items = parse_deliver(await request.body(), max_items)
        return _json(DeliverResponse.of(await store.deliver(items)))

    return r
