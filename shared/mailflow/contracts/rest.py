"""REST schemas shared by a server and its clients (the CLI, other services).

mailbox-store, admin group (header X-Mailflow-Admin-Token), used by `mailflow domain|user|alias`:
    GET    /admin/domains?offset=&limit=          -> Page[DomainPublic]
    POST   /admin/domains            DomainCreate -> 201 DomainPublic | 409 exists
    DELETE /admin/domains/{name}                  -> 204 | 404 | 409 still has users (unless ?force=true)
    GET    /admin/users?domain=&offset=&limit=    -> Page[UserPublic]
    POST   /admin/users              UserCreate   -> 201 UserPublic | 404 unknown domain | 409 exists
    GET    /admin/users/{address}                 -> UserPublic | 404
    PUT    /admin/users/{address}/password  PasswordChange -> 204 | 404 (the old password's sessions end)
    PUT    /admin/users/{address}/quota     QuotaChange    -> 204 | 404
    POST   /admin/users/{address}/disable         -> 204 | 404 (sessions end; mail still arrives)
    POST   /admin/users/{address}/enable          -> 204 | 404
    DELETE /admin/users/{address}                 -> 204 | 404 (mail, mailboxes and sessions go with the user)
    GET    /admin/aliases?domain=&offset=&limit=  -> Page[AliasPublic]
    POST   /admin/aliases            AliasCreate  -> 201 AliasPublic | 404 unknown domain | 409
    DELETE /admin/aliases/{address}               -> 204 | 404
mailbox-store, internal group (header X-Mailflow-Token): see mailflow.store.client.
queue (header X-Mailflow-Admin-Token), used by `mailflow queue ...` and `mailflow trace`: see the queue service.
Errors: {"detail": "..."} with the HTTP status; the CLI prints the detail.
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

SERVICE_TOKEN_HEADER = "X-Mailflow-Token"
ADMIN_TOKEN_HEADER = "X-Mailflow-Admin-Token"


class Schema(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Page(Schema, Generic[T]):
    items: list[T]
    total: int
    offset: int = 0
    limit: int = 100


class DomainCreate(Schema):
    name: str = Field(min_length=1, max_length=253)


class DomainPublic(Schema):
    name: str
    created_at: datetime | None = None
    users: int = 0


class UserCreate(Schema):
    address: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)
    quota_bytes: int | None = None  # None: the store's default quota


class UserPublic(Schema):
    address: str
    quota_bytes: int | None = None
    used_bytes: int = 0
    messages: int = 0
    created_at: datetime | None = None
    disabled: bool = False  # cannot log in (IMAP, POP3, SMTP AUTH); mail is still delivered


class PasswordChange(Schema):
    password: str = Field(min_length=1, max_length=1024)


class QuotaChange(Schema):
    quota_bytes: int | None  # None: unlimited


class AliasCreate(Schema):
    address: str  # "sales@example.test", or "@example.test" for the domain's catch-all
    targets: list[str] = Field(min_length=1)


class AliasPublic(Schema):
    address: str
    targets: list[str]
