"""StoreClient: the mailbox-store over REST, implementing Directory, Deliverer, Mailboxes, SieveScripts and
SieveSource (store/api.py).

    store = StoreClient(settings.store_url, settings.service_token.get_secret_value())
    res = await store.resolve("bob+news@example.test")          # Resolution(status="local", users=(...))
    results = await store.deliver([DeliverItem(key, rcpt, raw)])  # durable when it returns
    p = await store.authenticate("bob@example.test", "pw")       # Principal with a session token, or None
    sel = await store.select(p, "INBOX")
    await store.close()

Every call carries X-Mailflow-Token; access calls also `Authorization: Bearer <p.token>`. Calls that
carry message bytes use the frame of mailflow.store.wire (raw bytes, no base64); the rest JSON.
Errors, as store/api.py promises: a store that does not answer, times out, or fails inside
(5xx, a refused service token) -> ServiceUnavailable; 404 -> NotFound; 409 -> Conflict; 422 -> Invalid;
507 -> QuotaExceeded(permanent=...); an expired or invalid session token -> SessionExpired (an Invalid:
the session must log in again).
MailboxEvent.origin of a change is `session_origin(p)` of the session that made it.
deliver(): an item larger than the store's max_message_bytes comes back "failed" with permanent=True.
scram_start(username) and scram_finish(username, auth_message, proof, service) are SCRAM-SHA-256's two
store steps (mailflow.scram_auth); is_local_domain(domain) and expired_sessions(tokens) (the tokens refused now: revoked or expired, in
calls of at most 1000) are Directory calls too; dkim_signing_key(domain) is delivery's.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import orjson
from pydantic import BaseModel, ValidationError

from mailflow.contracts.rest import (
    SERVICE_TOKEN_HEADER,
    Authenticated,
    DeliverRequest,
    DeliverResponse,
    DkimSigning,
    DkimSigningKey,
    DomainLocal,
    Login,
    Resolved,
    ScramDone,
    ScramFinish,
    ScramSalt,
    SessionCheck,
    SessionsExpired,
)
from mailflow.errors import (
    Conflict,
    InsufficientStorage,
    Invalid,
    NotFound,
    QuotaExceeded,
    ServiceUnavailable,
)
from mailflow.store import wire
from mailflow.store.api import (
    ActiveScript,
    AppendResult,
    Changes,
    CopyResult,
    DeletedUse,
    DeliverItem,
    DeliverResult,
    FlagOp,
    MailboxInfo,
    MailboxStatus,
    MessageMeta,
    Principal,
    QuotaUse,
    Resolution,
    SaveDates,
    Selected,
    StoreResult,
)
from mailflow.store.search import SearchKey, to_obj
from mailflow.store.transport import Http, Response, TransportError

TRACE_HEADER = "X-Mailflow-Trace"
M = TypeVar("M", bound=BaseModel)


class SessionExpired(Invalid):
    """The session token is no longer accepted (expired, revoked by a password change, disable or delete,
    or the store's key changed): log in again."""


def session_origin(p: Principal | str) -> str:
    """The session id inside a token: MailboxEvent.origin of the changes this session makes."""
    token = p.token if isinstance(p, Principal) else p
    try:
        text = token.partition(".")[0]
        return str(orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))[2])
    except (ValueError, TypeError, IndexError):
        return ""


def _ts(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _status(d: dict) -> MailboxStatus:
    return MailboxStatus(**d)


def _info(r: list) -> MailboxInfo:
    return MailboxInfo(
        id=r[0], name=r[1], special_use=r[2], subscribed=r[3], has_children=r[4], selectable=r[5]
    )


def _expand(uid_ranges: list[list[int]]) -> list[int]:
    """[[lo, hi], ...] as the UIDs, ascending (the store sends them sorted and disjoint)."""
    return [u for lo, hi in uid_ranges for u in range(lo, hi + 1)]


def _first_at_least(uids: list[int], value: int) -> int:
    from bisect import bisect_left

    return bisect_left(uids, value)


def _metas(d: dict) -> list[MessageMeta]:
    """Columns {"u","f","fs","m","z","d","e"} -> MessageMeta per message."""
    sets = [frozenset(f) for f in d["fs"]]
    dates: dict[int, datetime] = {}
    out = []
    for uid, f, modseq, size, when, body in zip(d["u"], d["f"], d["m"], d["z"], d["d"], d["e"], strict=True):
        at = dates.get(when)
        if at is None:
            at = dates[when] = datetime.fromtimestamp(when, UTC)
        out.append(MessageMeta(uid=uid, flags=sets[f], modseq=modseq, size=size, internal_date=at, email_id=body))
    return out


class StoreClient:
    def __init__(self, base_url: str, service_token: str, timeout: float = 10.0, max_connections: int = 64):
        self.base_url = base_url.rstrip("/")
        self._http = Http(self.base_url, {SERVICE_TOKEN_HEADER: service_token}, timeout, max_connections)

    async def close(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> StoreClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # --- transport ------------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: dict | None = None,
        p: Principal | None = None,
        trace: str | None = None,
    ) -> Response:
        headers = {}
        if trace:
            headers[TRACE_HEADER] = trace
        if p is not None and p.token:
            headers["Authorization"] = f"Bearer {p.token}"
        if content is not None:
            headers["Content-Type"] = wire.CONTENT_TYPE
        elif json is not None:
            content = orjson.dumps(json)
            headers["Content-Type"] = "application/json"
        if params:
            path += "?" + urlencode(params)
        try:
            r = await self._http.request(method, path, content or b"", headers)
        except TransportError as exc:
            raise ServiceUnavailable(f"mailbox-store at {self.base_url} did not answer: {exc}") from exc
        if r.status >= 400:
            _raise(r)
        return r

    async def _json(self, method: str, path: str, **kw) -> Any:
        r = await self._call(method, path, **kw)
        return orjson.loads(r.content) if r.content else None

    async def _frame(self, method: str, path: str, **kw) -> tuple[Any, list[bytes]]:
        r = await self._call(method, path, **kw)
        try:
            return wire.decode(r.content)
        except ValueError as exc:
            raise ServiceUnavailable(f"mailbox-store sent a broken frame: {exc}") from exc

    # --- Directory ------------------------------------------------------------------------------------

    async def resolve(self, address: str) -> Resolution:
        r = await self._call("GET", "/internal/resolve", params={"address": address})
        return _model(Resolved, r).resolution()

    async def authenticate(self, username: str, password: str, service: str = "imap") -> Principal | None:
        login = Login.model_construct(username=username, password=password, service=service)  # the store checks
        r = await self._call("POST", "/internal/authenticate", json=login.model_dump())
        p = _model(Authenticated, r).principal
        return None if p is None else p.principal()

    async def scram_start(self, username: str) -> tuple[bytes, int]:
        r = await self._call("POST", "/internal/scram/start", json={"username": username})
        salt = _model(ScramSalt, r)
        return base64.b64decode(salt.salt), salt.iterations

    async def scram_finish(
        self, username: str, auth_message: bytes, client_proof: bytes, service: str = "imap"
    ) -> tuple[Principal, bytes] | None:
        body = ScramFinish.model_construct(
            username=username, auth_message=auth_message.decode("utf-8"),
            client_proof=base64.b64encode(client_proof).decode(), service=service,
        )  # fmt: skip
        done = _model(ScramDone, await self._call("POST", "/internal/scram/finish", json=body.model_dump()))
        if done.principal is None or done.server_signature is None:
            return None
        return done.principal.principal(), base64.b64decode(done.server_signature)

    async def is_local_domain(self, domain: str) -> bool:
        return _model(DomainLocal, await self._call("GET", "/internal/domain", params={"name": domain})).local

    async def dkim_signing_key(self, domain: str) -> DkimSigningKey | None:
        """The active DKIM key set of `domain` or of its nearest parent (private keys as SecretStr), or None."""
        return _model(DkimSigning, await self._call("GET", "/internal/dkim", params={"domain": domain})).key

    async def expired_sessions(self, tokens: list[str]) -> set[str]:
        out: set[str] = set()
        for i in range(0, len(tokens), 1000):
            chunk = tokens[i : i + 1000]
            check = SessionCheck.model_construct(tokens=chunk)
            r = await self._call("POST", "/internal/sessions/check", json=check.model_dump())
            out.update(chunk[k] for k in _model(SessionsExpired, r).expired)
        return out

    # --- Deliverer ------------------------------------------------------------------------------------

    async def deliver(self, items: list[DeliverItem]) -> list[DeliverResult]:
        if not items:
            return []
        head = DeliverRequest.of(items).model_dump(mode="json")
        traces = {it.trace_id for it in items}
        r = await self._call(
            "POST",
            "/internal/deliver",
            content=wire.encode(head, [it.body for it in items]),
            trace=traces.pop() if len(traces) == 1 else None,
        )
        return _model(DeliverResponse, r).deliver_results()

    # --- Mailboxes ------------------------------------------------------------------------------------

    async def list_mailboxes(self, p: Principal) -> list[MailboxInfo]:
        rows = await self._json("POST", "/access/mailboxes/list", json={}, p=p)
        return [_info(r) for r in rows]

    async def create_mailbox(self, p: Principal, name: str, special_use: str | None = None) -> MailboxInfo:
        r = await self._json(
            "POST", "/access/mailboxes/create", json={"name": name, "special_use": special_use}, p=p
        )
        return _info(r)

    async def delete_mailbox(self, p: Principal, name: str) -> None:
        await self._json("POST", "/access/mailboxes/delete", json={"name": name}, p=p)

    async def rename_mailbox(self, p: Principal, old: str, new: str) -> None:
        await self._json("POST", "/access/mailboxes/rename", json={"old": old, "new": new}, p=p)

    async def subscribe(self, p: Principal, name: str, subscribed: bool) -> None:
        await self._json(
            "POST", "/access/mailboxes/subscribe", json={"name": name, "subscribed": subscribed}, p=p
        )

    async def status(self, p: Principal, name: str) -> MailboxStatus:
        return _status(await self._json("POST", "/access/status", json={"name": name}, p=p))

    async def quota(self, p: Principal) -> QuotaUse:
        return QuotaUse(**await self._json("POST", "/access/quota", json={}, p=p))

    async def deleted(self, p: Principal, name: str) -> DeletedUse:
        return DeletedUse(**await self._json("POST", "/access/deleted", json={"name": name}, p=p))

    async def select(
        self, p: Principal, name: str, claim_recent: bool = True, vanished_since: int | None = None
    ) -> Selected:
        ask: dict[str, Any] = {"name": name, "claim_recent": claim_recent}
        if vanished_since is not None:
            ask["vanished_since"] = vanished_since
        head, (uids_b, index_b, modseqs_b) = await self._frame("POST", "/access/select", json=ask, p=p)
        sets = [frozenset(f) for f in head["flagsets"]]
        uids = wire.unpack_array(uids_b, "I").tolist()
        index = wire.unpack_array(index_b, head["index"])
        recent_from = head["recent_from"]
        recent = set() if recent_from is None else {u for u in uids[_first_at_least(uids, recent_from) :]}
        return Selected(
            status=_status(head["status"]),
            uids=uids,
            flags=list(map(sets.__getitem__, index)),
            modseqs=wire.unpack_array(modseqs_b, "q").tolist(),
            recent=recent,
            permanent_keywords=head["permanent_keywords"],
            vanished=_expand(head["vanished"]) if "vanished" in head else None,
            vanished_complete=head.get("vanished_complete", True),
        )

    async def claim_recent(self, p: Principal, mailbox_id: int, upto: int, claim: bool = True) -> int | None:
        d = await self._json(
            "POST", "/access/recent", json={"mailbox_id": mailbox_id, "upto": upto, "claim": claim}, p=p
        )
        return d["recent_from"]

    async def changes(self, p: Principal, mailbox_id: int, since_modseq: int) -> Changes:
        d = await self._json(
            "POST", "/access/changes", json={"mailbox_id": mailbox_id, "since": since_modseq}, p=p
        )
        return Changes(
            status=_status(d["status"]),
            updated=_metas(d["updated"]),
            expunged=d["expunged"],
            expunged_complete=d.get("complete", True),
        )

    async def fetch_meta(self, p: Principal, mailbox_id: int, uids: list[int]) -> list[MessageMeta]:
        if not uids:
            return []
        d = await self._json(
            "POST", "/access/meta", json={"mailbox_id": mailbox_id, "uids": ranges(uids)}, p=p
        )
        return _metas(d)

    async def fetch_save_dates(self, p: Principal, mailbox_id: int, uids: list[int]) -> SaveDates:
        if not uids:
            return {}
        d = await self._json(
            "POST", "/access/savedates", json={"mailbox_id": mailbox_id, "uids": ranges(uids)}, p=p
        )
        return {uid: _ts(at) for uid, at in zip(d["u"], d["s"], strict=True)}

    async def subscriptions(self, p: Principal) -> list[str]:
        return await self._json("POST", "/access/mailboxes/subscriptions", p=p)

    async def fetch_parsed(self, p: Principal, mailbox_id: int, uids: list[int]) -> dict[int, bytes]:
        if not uids:
            return {}
        head, parts = await self._frame(
            "POST", "/access/parsed", json={"mailbox_id": mailbox_id, "uids": ranges(uids)}, p=p
        )
        return dict(zip(head["uids"], parts, strict=True))

    async def fetch_bodies(self, p: Principal, mailbox_id: int, uids: list[int]) -> dict[int, bytes]:
        if not uids:
            return {}
        head, parts = await self._frame(
            "POST", "/access/bodies", json={"mailbox_id": mailbox_id, "uids": ranges(uids)}, p=p
        )
        return dict(zip(head["uids"], parts, strict=True))

    async def fetch_sections(
        self, p: Principal, mailbox_id: int, uids: list[int], spec: str
    ) -> dict[int, bytes]:
        """uid -> BODY[<spec>] (RFC 3501 §6.4.5), cut in the store."""
        if not uids:
            return {}
        head, parts = await self._frame(
            "POST",
            "/access/sections",
            json={"mailbox_id": mailbox_id, "uids": ranges(uids), "spec": spec},
            p=p,
        )
        return dict(zip(head["uids"], parts, strict=True))

    async def store_flags(
        self,
        p: Principal,
        mailbox_id: int,
        uids: list[int],
        op: FlagOp,
        flags: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreResult:
        if not uids:
            return StoreResult(updated=[])
        d = await self._json(
            "POST",
            "/access/flags",
            json={
                "mailbox_id": mailbox_id,
                "uids": ranges(uids),
                "op": op,
                "flags": sorted(flags),
                "unchanged_since": unchanged_since,
            },
            p=p,
        )
        return StoreResult(updated=_metas(d["updated"]), modified=d["modified"])

    async def expunge(self, p: Principal, mailbox_id: int, uids: list[int] | None = None) -> list[int]:
        if uids is not None and not uids:
            return []
        body = {"mailbox_id": mailbox_id, "uids": None if uids is None else ranges(uids)}
        return (await self._json("POST", "/access/expunge", json=body, p=p))["uids"]

    async def _copy(self, path: str, p: Principal, mailbox_id: int, uids: list[int], dest: str) -> CopyResult:
        d = await self._json(
            "POST", path, json={"mailbox_id": mailbox_id, "uids": ranges(uids), "dest": dest}, p=p
        )
        return CopyResult(
            uidvalidity=d["uidvalidity"], source_uids=d["source_uids"], dest_uids=d["dest_uids"]
        )

    async def copy(self, p: Principal, mailbox_id: int, uids: list[int], dest: str) -> CopyResult:
        return await self._copy("/access/copy", p, mailbox_id, uids, dest)

    async def move(self, p: Principal, mailbox_id: int, uids: list[int], dest: str) -> CopyResult:
        return await self._copy("/access/move", p, mailbox_id, uids, dest)

    async def append(
        self,
        p: Principal,
        name: str,
        body: bytes,
        flags: frozenset[str] = frozenset(),
        internal_date: datetime | None = None,
    ) -> AppendResult:
        return await self.append_many(p, name, [(body, flags, internal_date)])

    async def append_many(
        self, p: Principal, name: str, items: list[tuple[bytes, frozenset[str], datetime | None]]
    ) -> AppendResult:
        head = {
            "name": name,
            "items": [
                {"flags": sorted(flags), "internal_date": when.isoformat() if when else None} for _, flags, when in items
            ],
        }
        d = await self._json("POST", "/access/append", content=wire.encode(head, [body for body, _, _ in items]), p=p)
        return AppendResult(uidvalidity=d["uidvalidity"], uids=d["uids"])

    async def search(self, p: Principal, mailbox_id: int, key: SearchKey) -> list[int]:
        d = await self._json(
            "POST", "/access/search", json={"mailbox_id": mailbox_id, "key": to_obj(key)}, p=p
        )
        return d["uids"]

    async def sort(
        self, p: Principal, mailbox_id: int, key: SearchKey, criteria: list[tuple[str, bool]]
    ) -> list[int]:
        body = {"mailbox_id": mailbox_id, "key": to_obj(key), "criteria": [list(c) for c in criteria]}
        return (await self._json("POST", "/access/sort", json=body, p=p))["uids"]

    async def thread(
        self, p: Principal, mailbox_id: int, key: SearchKey, algorithm: str
    ) -> list[tuple[int, int]]:
        body = {"mailbox_id": mailbox_id, "key": to_obj(key), "algorithm": algorithm}
        return [(u, d) for u, d in (await self._json("POST", "/access/thread", json=body, p=p))["nodes"]]

    async def pop3_lock(self, p: Principal) -> str:
        return (await self._json("POST", "/access/pop3/lock", json={}, p=p))["token"]

    async def pop3_unlock(self, p: Principal, token: str) -> None:
        await self._json("POST", "/access/pop3/unlock", json={"token": token}, p=p)

    # --- Sieve scripts ----------------------------------------------------------------------------

    async def list_scripts(self, p: Principal) -> list[tuple[str, bool]]:
        return [(str(n), bool(a)) for n, a in await self._json("POST", "/access/sieve/list", json={}, p=p)]

    async def get_script(self, p: Principal, name: str) -> bytes:
        return _unb64((await self._json("POST", "/access/sieve/get", json={"name": name}, p=p))["script"])

    async def have_space(self, p: Principal, name: str, size: int) -> None:
        await self._json("POST", "/access/sieve/space", json={"name": name, "size": size}, p=p)

    async def put_script(self, p: Principal, name: str, script: bytes) -> None:
        body = {"name": name, "script": base64.b64encode(script).decode()}
        await self._json("POST", "/access/sieve/put", json=body, p=p)

    async def set_active(self, p: Principal, name: str) -> None:
        await self._json("POST", "/access/sieve/activate", json={"name": name}, p=p)

    async def delete_script(self, p: Principal, name: str) -> None:
        await self._json("POST", "/access/sieve/delete", json={"name": name}, p=p)

    async def rename_script(self, p: Principal, old: str, new: str) -> None:
        await self._json("POST", "/access/sieve/rename", json={"old": old, "new": new}, p=p)

    async def active_script(self, login: str) -> ActiveScript | None:
        d = await self._json("POST", "/internal/sieve/active", json={"login": login})
        if d.get("script") is None:
            return None
        others = tuple((str(n), _unb64(b)) for n, b in (d.get("others") or {}).items())
        return ActiveScript(name=d["name"], script=_unb64(d["script"]), mailboxes=tuple(d["mailboxes"]), others=others)

    async def vacation_due(self, login: str, key: str, days: int) -> bool:
        d = await self._json("POST", "/internal/sieve/vacation", json={"login": login, "key": key, "days": days})
        return bool(d["send"])


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ServiceUnavailable("mailbox-store sent a script that is not base64") from exc


def _model(cls: type[M], r: Response) -> M:
    """A response body as its contract model; one that does not fit is the store failing (temporary)."""
    try:
        return cls.model_validate_json(r.content)
    except ValidationError as exc:
        raise ServiceUnavailable(
            f"mailbox-store sent a malformed {cls.__name__}: {exc.error_count()} errors"
        ) from exc


def _raise(r: Response) -> None:
    try:
        body = orjson.loads(r.content)
        detail = body.get("detail", "") if isinstance(body, dict) else str(body)
    except ValueError:
        body, detail = {}, r.content[:200].decode("utf-8", "replace")
    if not isinstance(detail, str):
        detail = orjson.dumps(detail).decode()
    s = r.status
    if s == 404:
        raise NotFound(detail)
    if s == 409:
        raise Conflict(detail)
    if s in (400, 422):
        raise Invalid(detail)
    if s == 507:
        raise QuotaExceeded(detail, permanent=bool(body.get("permanent", False)))
    if s == 401 and detail == "session":
        raise SessionExpired("session expired, log in again")
    if s == 503 and isinstance(body, dict) and body.get("storage") == "full":
        raise InsufficientStorage(f"mailbox-store: {detail}")
    raise ServiceUnavailable(f"mailbox-store answered {s}: {detail}")


def ranges(uids: Sequence[int]) -> list[list[int]]:
    return wire.uid_ranges(uids)
