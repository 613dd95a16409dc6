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
    PUT    /admin/users/{address}/role      RoleChange     -> 204 | 404 ("admin": the web console's admin pages)
    POST   /admin/users/{address}/disable         -> 204 | 404 (sessions end; mail still arrives)
    POST   /admin/users/{address}/enable          -> 204 | 404
    DELETE /admin/users/{address}                 -> 204 | 404 (mail, mailboxes and sessions go with the user)
    GET    /admin/aliases?domain=&offset=&limit=  -> Page[AliasPublic]
    POST   /admin/aliases            AliasCreate  -> 201 AliasPublic | 404 unknown domain | 409
    DELETE /admin/aliases/{address}               -> 204 | 404
    GET    /admin/dkim?domain=                    -> list[DkimKeyPublic] (public parts only)
    POST   /admin/dkim               DkimKeyCreate -> 201 DkimKeyPublic, state "pending" | 404 domain | 409 selector
    POST   /admin/dkim/{domain}/{selector}/activate -> DkimKeyPublic (it signs from now; the one before is "retired")
    DELETE /admin/dkim/{domain}/{selector}        -> 204 | 404 | 409 the signing key (unless ?force=true)
mailbox-store, internal group (header X-Mailflow-Token), used through mailflow.store.client.StoreClient:
    GET    /internal/resolve?address=            -> Resolved
    GET    /internal/domain?name=                -> DomainLocal
    POST   /internal/authenticate    Login        -> Authenticated (principal null: wrong login or disabled)
    POST   /internal/sessions/check  SessionCheck -> SessionsExpired
    GET    /internal/dkim?domain=                 -> DkimSigning: the active key of the domain or of its
           nearest parent that has one (delivery signs with it), or null
    POST   /internal/deliver   frame(DeliverRequest, one part per item: the message) -> DeliverResponse
           one result per item, in order, once all are durable; idempotent per (key, user); a full
           mailbox is a result (quota_exceeded, `permanent` when the message can never fit), not an error
mailbox-store, access group (imap-pop3): see the store's api/access.py.
queue (header X-Mailflow-Admin-Token), used by `mailflow queue ...` and `mailflow trace`: see the queue service.
Errors: {"detail": "..."} with the HTTP status; the CLI prints the detail.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_serializer

from mailflow.store.api import (
    DeliverItem,
    DeliverResult,
    DeliverStatus,
    Principal,
    RecipientStatus,
    Resolution,
)

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
    role: str = "user"  # ROLES: "admin" may use the web console's admin pages


class PasswordChange(Schema):
    password: str = Field(min_length=1, max_length=1024)


ROLES = ("user", "admin")


class RoleChange(Schema):
    role: Literal["user", "admin"]


class QuotaChange(Schema):
    quota_bytes: int | None  # None: unlimited


class AliasCreate(Schema):
    address: str  # "sales@example.test", or "@example.test" for the domain's catch-all
    targets: list[str] = Field(min_length=1)


class AliasPublic(Schema):
    address: str
    targets: list[str]


# --- mailbox-store: DKIM keys (RFC 6376, RFC 8463) -----------------------------------------------------

DkimState = Literal["pending", "active", "retired"]  # made (publish it) -> signing -> kept for verifiers
DkimAlgorithm = Literal["rsa-sha256", "ed25519-sha256"]
# A key set signs with both; each public key has its DNS selector "<selector>-<kind>".
DKIM_KINDS: dict[str, DkimAlgorithm] = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}


def dkim_selector(selector: str, kind: str) -> str:
    """The DNS selector of one key of a set: "2026a" and "rsa" -> "2026a-rsa" (2026a-rsa._domainkey.DOMAIN)."""
    return f"{selector}-{kind}"


class DkimKeyCreate(Schema):
    domain: str = Field(min_length=1, max_length=253)
    selector: str | None = Field(None, max_length=40)  # None: the store picks "mf<YYYYMMDD>", then a b, c...


class DkimRecord(Schema):
    """One public key as DNS publishes it: TXT at <selector>._domainkey.<domain>."""

    selector: str  # the DNS selector, "<key selector>-<kind>"
    algorithm: DkimAlgorithm
    public_key: str  # base64: p= (RSA: SubjectPublicKeyInfo DER; Ed25519: the 32 raw octets, RFC 8463 §4.2)

    def txt(self) -> str:
        return f"v=DKIM1; k={self.algorithm.split('-')[0]}; p={self.public_key}"


class DkimKeyPublic(Schema):
    """A key set without its private keys: what listings and the CLI see."""

    domain: str
    selector: str
    state: DkimState
    created_at: datetime | None = None
    activated_at: datetime | None = None
    records: list[DkimRecord]


class DkimSigningKey(Schema):
    """The private keys of a domain's active set (PKCS#8 PEM), for delivery only (service token). They are
    SecretStr: a repr, a log line or an error shows "**********"; only the JSON on the wire carries them."""

    domain: str  # d=: the From domain or the parent domain whose key this is
    selector: str
    rsa_private: SecretStr
    ed25519_private: SecretStr

    @field_serializer("rsa_private", "ed25519_private", when_used="json")
    def _reveal(self, value: SecretStr) -> str:
        return value.get_secret_value()


class DkimSigning(Schema):
    key: DkimSigningKey | None = None  # None: neither the domain nor a parent of it has an active key


# --- mailbox-store, internal group: the directory ----------------------------------------------------


def _fields(obj, skip: str = "") -> dict:
    """A dataclass's fields by name (shallow: a body is not copied), for a contract model of the same names."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name != skip}


class Resolved(Schema):
    address: str
    status: RecipientStatus
    users: list[str] = Field(default_factory=list)
    forward: list[str] = Field(default_factory=list)  # external targets of aliases (Resolution.forward)

    @classmethod
    def of(cls, r: Resolution) -> Resolved:
        return cls.model_validate(_fields(r))

    def resolution(self) -> Resolution:
        return Resolution(self.address, self.status, tuple(self.users), tuple(self.forward))


class DomainLocal(Schema):
    local: bool  # mail for the domain is ours: decided by the domain, never by an address


class Login(Schema):
    username: str = Field(max_length=1024)
    password: str = Field(max_length=1024)
    service: str = Field("imap", max_length=32)  # for the log


class PrincipalOut(Schema):
    user_id: int
    address: str
    addresses: list[str]
    token: str
    generation: int

    @classmethod
    def of(cls, p: Principal) -> PrincipalOut:
        return cls.model_validate(_fields(p))

    def principal(self) -> Principal:
        return Principal(**{**dict(self), "addresses": tuple(self.addresses)})


class Authenticated(Schema):
    principal: PrincipalOut | None


class ScramStart(Schema):
    username: str = Field(max_length=1024)


class ScramSalt(Schema):
    salt: str  # base64; a stable made-up one for a user with no verifier (the finish then fails)
    iterations: int


class ScramFinish(Schema):
    """RFC 5802 §3: the AuthMessage the protocol service built, and the client's proof (base64)."""

    username: str = Field(max_length=1024)
    auth_message: str = Field(max_length=3 * 4096 + 2)  # three SCRAM messages of at most 4096 octets
    client_proof: str = Field(max_length=128)
    service: str = Field("imap", max_length=32)  # for the log


class ScramDone(Schema):
    principal: PrincipalOut | None  # null: a wrong proof, an unknown or disabled user, no verifier yet
    server_signature: str | None = None  # base64, for the server-final message


class SessionCheck(Schema):
    tokens: list[str] = Field(max_length=1000)


class SessionsExpired(Schema):
    expired: list[int]  # indexes into SessionCheck.tokens of those no longer accepted


# --- mailbox-store, internal group: delivery (the MDA's batched append) ------------------------------


class DeliverItemHead(Schema):
    """One message of a deliver call; its bytes are the frame part at the same index."""

    key: str  # idempotency key, e.g. "<queue_id>/<recipient>": stored once per (key, user)
    recipient: str  # the envelope recipient; the store resolves aliases itself
    mailbox: str | None = "INBOX"  # None or "": INBOX
    junk: bool = False  # into the user's \Junk mailbox instead of `mailbox` (made as "Junk" if none)
    create: bool = False  # make `mailbox` if the user has none of that name (Sieve fileinto :create)
    flags: list[str] = Field(default_factory=list)
    internal_date: datetime | None = None  # None: when it is stored
    queue_id: str = ""
    trace_id: str = ""


class DeliverRequest(Schema):
    items: list[DeliverItemHead]

    @classmethod
    def of(cls, items: Sequence[DeliverItem]) -> DeliverRequest:
        return cls(items=[DeliverItemHead.model_validate(_fields(it, skip="body")) for it in items])

    def with_bodies(self, bodies: Sequence[bytes]) -> list[DeliverItem]:
        """The items, each with its body. ValueError if there are not as many bodies as items."""
        if len(bodies) != len(self.items):
            raise ValueError("items and bodies differ in number")
        return [
            DeliverItem(**{**dict(h), "mailbox": h.mailbox or "INBOX", "flags": tuple(h.flags)}, body=body)
            for h, body in zip(self.items, bodies, strict=True)
        ]


class DeliverOutcome(Schema):
    key: str
    status: DeliverStatus  # stored/duplicate: done; unknown_user: bounce; quota_exceeded: see permanent
    permanent: bool = False  # quota: 552 5.2.2 if true, else 452 4.2.2 (try later); failed: never retry
    detail: str = ""
    users: list[str] = Field(default_factory=list)  # who received it (an alias may reach several users)


class DeliverResponse(Schema):
    results: list[DeliverOutcome]

    @classmethod
    def of(cls, results: Sequence[DeliverResult]) -> DeliverResponse:
        return cls(results=[DeliverOutcome.model_validate(_fields(r)) for r in results])

    def deliver_results(self) -> list[DeliverResult]:
        return [DeliverResult(**{**dict(r), "users": tuple(r.users)}) for r in self.results]
