"""Admin group (header X-Mailflow-Admin-Token), exactly as mailflow.contracts.rest documents it."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Response

from mailflow.contracts.rest import (
    ADMIN_TOKEN_HEADER,
    AliasCreate,
    AliasPublic,
    DkimKeyCreate,
    DkimKeyPublic,
    DomainCreate,
    DomainPublic,
    Page,
    PasswordChange,
    QuotaChange,
    RoleChange,
    UserCreate,
    UserPublic,
)
from mailflow.web import require_token


def router(store, admin_token: str) -> APIRouter:
    r = APIRouter(
        prefix="/admin",
        tags=["admin"],
        dependencies=[Depends(require_token(ADMIN_TOKEN_HEADER, admin_token))],
    )
    OFFSET = Query(0, ge=0)
    LIMIT = Query(100, ge=1, le=1000)

    @r.get("/domains", response_model=Page[DomainPublic])
    async def list_domains(offset: int = OFFSET, limit: int = LIMIT):
        items, total = await store.list_domains(offset, limit)
        return Page[DomainPublic](items=items, total=total, offset=offset, limit=limit)

    @r.post("/domains", status_code=201, response_model=DomainPublic)
    async def create_domain(body: DomainCreate):
        return await store.create_domain(body.name)

    @r.delete("/domains/{name}", status_code=204)
    async def delete_domain(name: str, force: bool = False):
        await store.delete_domain(name, force)
        return Response(status_code=204)

    @r.get("/users", response_model=Page[UserPublic])
    async def list_users(domain: str | None = None, offset: int = OFFSET, limit: int = LIMIT):
        items, total = await store.list_users(domain, offset, limit)
        return Page[UserPublic](items=items, total=total, offset=offset, limit=limit)

    @r.post("/users", status_code=201, response_model=UserPublic)
    async def create_user(body: UserCreate):
        return await store.create_user(body.address, body.password, body.quota_bytes)

    @r.get("/users/{address}", response_model=UserPublic)
    async def get_user(address: str):
        return await store.get_user(address)

    @r.put("/users/{address}/password", status_code=204)
    async def set_password(address: str, body: PasswordChange):
        await store.set_password(address, body.password)
        return Response(status_code=204)

    @r.put("/users/{address}/quota", status_code=204)
    async def set_quota(address: str, body: QuotaChange):
        await store.set_quota(address, body.quota_bytes)
        return Response(status_code=204)

    @r.put("/users/{address}/role", status_code=204)
    async def set_role(address: str, body: RoleChange):
        """"admin" may log in to the web console's admin pages; "user" only to its own."""
        await store.set_role(address, body.role)
        return Response(status_code=204)

    @r.post("/users/{address}/disable", status_code=204)
    async def disable_user(address: str):
        """The user's sessions end and it cannot log in (IMAP, POP3, SMTP AUTH); mail is still delivered."""
        await store.set_disabled(address, True)
        return Response(status_code=204)

    @r.post("/users/{address}/enable", status_code=204)
    async def enable_user(address: str):
        await store.set_disabled(address, False)
        return Response(status_code=204)

    @r.delete("/users/{address}", status_code=204)
    async def delete_user(address: str):
        await store.delete_user(address)
        return Response(status_code=204)

    @r.get("/aliases", response_model=Page[AliasPublic])
    async def list_aliases(domain: str | None = None, offset: int = OFFSET, limit: int = LIMIT):
        items, total = await store.list_aliases(domain, offset, limit)
        return Page[AliasPublic](items=items, total=total, offset=offset, limit=limit)

    @r.post("/aliases", status_code=201, response_model=AliasPublic)
    async def create_alias(body: AliasCreate):
        return await store.create_alias(body.address, body.targets)

    @r.delete("/aliases/{address}", status_code=204)
    async def delete_alias(address: str):
        await store.delete_alias(address)
        return Response(status_code=204)

    @r.get("/dkim", response_model=list[DkimKeyPublic])
    async def list_dkim_keys(domain: str | None = None):
        """Every DKIM key set (of one domain), public parts only."""
        return await store.list_dkim_keys(domain)

    @r.post("/dkim", status_code=201, response_model=DkimKeyPublic)
    async def create_dkim_key(body: DkimKeyCreate):
        """A new RSA 2048 + Ed25519 set, pending: publish its records, then activate it."""
        return await store.create_dkim_key(body.domain, body.selector)

    @r.post("/dkim/{domain}/{selector}/activate", response_model=DkimKeyPublic)
    async def activate_dkim_key(domain: str, selector: str):
        """Sign the domain's mail with this set from now on; the one before is retired (still listed)."""
        return await store.activate_dkim_key(domain, selector)

    @r.delete("/dkim/{domain}/{selector}", status_code=204)
    async def remove_dkim_key(domain: str, selector: str, force: bool = False):
        await store.remove_dkim_key(domain, selector, force)
        return Response(status_code=204)

    return r
