"""Sieve scripts: the owning user's (ManageSieve, RFC 5804) and the active one for delivery.

/access/sieve/*: header X-Mailflow-Token and `Authorization: Bearer <session token>`, scoped to the
session's user (another user's script is simply NotFound). Script bytes travel as base64 in JSON (scripts
are small: sieve_max_script_bytes). /internal/sieve/active (service token only) answers the active script
of a login, with the user's mailbox names and (for `include`) other scripts, or {"script": null};
/internal/sieve/vacation {login, key, days} says whether a vacation reply may go now, and if so records it. Errors as in api/__init__.py: NotFound 404,
Conflict 409 (deleting the active script, renaming onto a name in use), Invalid 422 (a bad name),
QuotaExceeded 507 (text "maxsize: ..." or "maxscripts: ...").
"""

from __future__ import annotations

import base64

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from mailflow.contracts.rest import SERVICE_TOKEN_HEADER
from mailflow.errors import Invalid
from mailflow.web import require_token
from mailflow_mailbox_store.api.access import session_of

NAME = Field(max_length=1024)


class Name(BaseModel):
    name: str = NAME


class Space(Name):
    size: int = Field(ge=0)


class Put(Name):
    script: str = Field(max_length=16 * 1024 * 1024)  # base64; the store's limit is checked after decoding


class Rename(BaseModel):
    old: str = NAME
    new: str = NAME


class Login(BaseModel):
    login: str = Field(max_length=320)


class VacationSent(Login):
    key: str = Field(min_length=64, max_length=64)
    days: int = Field(ge=1, le=365)


def _json(data) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


def router(store, service_token: str) -> APIRouter:
    r = APIRouter(tags=["sieve"], dependencies=[Depends(require_token(SERVICE_TOKEN_HEADER, service_token))])
    session = session_of(store)

    @r.post("/access/sieve/list")
    async def list_scripts(request: Request):
        """[[name, active], ...] by name."""
        return _json(await store.list_scripts(await session(request)))

    @r.post("/access/sieve/get")
    async def get_script(request: Request, body: Name):
        script = await store.get_script(await session(request), body.name)
        return _json({"script": base64.b64encode(script).decode()})

    @r.post("/access/sieve/space")
    async def have_space(request: Request, body: Space):
        await store.have_space(await session(request), body.name, body.size)
        return _json({})

    @r.post("/access/sieve/put")
    async def put_script(request: Request, body: Put):
        s = await session(request)
        try:
            script = base64.b64decode(body.script, validate=True)
        except ValueError as exc:
            raise Invalid("script: not base64") from exc
        await store.put_script(s, body.name, script)
        return _json({})

    @r.post("/access/sieve/activate")
    async def set_active(request: Request, body: Name):
        """Make the named script the active one; "" leaves none active."""
        await store.set_active(await session(request), body.name)
        return _json({})

    @r.post("/access/sieve/delete")
    async def delete_script(request: Request, body: Name):
        await store.delete_script(await session(request), body.name)
        return _json({})

    @r.post("/access/sieve/rename")
    async def rename_script(request: Request, body: Rename):
        await store.rename_script(await session(request), body.old, body.new)
        return _json({})

    @r.post("/internal/sieve/active")
    async def active_script(body: Login):
        """The active script of a user: {name, script (base64), mailboxes, others: {name: base64} (the
        user's other scripts, when the active one may include them)}, or {"script": null}."""
        found = await store.active_script(body.login)
        if found is None:
            return _json({"script": None})
        name, script, boxes, others = found
        b64 = base64.b64encode
        return _json({"name": name, "script": b64(script).decode(), "mailboxes": boxes,
                      "others": {n: b64(s).decode() for n, s in others}})  # fmt: skip

    @r.post("/internal/sieve/vacation")
    async def vacation_due(body: VacationSent):
        """May this vacation reply go now (RFC 5230 :days)? {"send": true} records that it does."""
        return _json({"send": await store.vacation_due(body.login, body.key, body.days)})

    return r
