"""An in-memory store and queue behind the console's Backend interface, for the TestClient tests.

Only what the pages call: users (with password, role, disabled, session generation), domains, aliases,
DKIM listing, queue listing, counts and the per-message actions. Errors are BackendError as the real
Api raises them.
"""

from __future__ import annotations

import secrets
from urllib.parse import unquote

from mailflow_web.backend import BackendError


class FakeStore:
    def __init__(self):
        self.users: dict[str, dict] = {}
        self.domains: set[str] = set()
        self.tokens: dict[str, tuple[str, int]] = {}  # token -> (address, generation)
        self.calls: list[tuple[str, str]] = []

    def add(self, address: str, password: str, role: str = "user", quota: int | None = None):
        self.domains.add(address.split("@")[1])
        self.users[address] = {
            "address": address, "password": password, "role": role, "disabled": False, "generation": 1,
            "quota_bytes": quota, "used_bytes": 1234, "messages": 2, "created_at": None,
        }  # fmt: skip

    def public(self, u: dict) -> dict:
        return {k: v for k, v in u.items() if k not in ("password", "generation")}

    def user(self, address: str) -> dict:
        u = self.users.get(unquote(address))
        if u is None:
            raise BackendError(404, f"no user {address}")
        return u

    async def get(self, path: str, **params):
        self.calls.append(("GET", path))
        if path.startswith("/admin/users/"):
            return self.public(self.user(path.removeprefix("/admin/users/")))
        if path == "/admin/users":
            items = [self.public(u) for u in self.users.values()]
            return {"items": items, "total": len(items), "offset": 0, "limit": 50}
        if path == "/admin/domains":
            items = [{"name": d, "users": 0, "created_at": None} for d in sorted(self.domains)]
            return {"items": items, "total": len(items), "offset": 0, "limit": 50}
        if path == "/admin/aliases":
            return {"items": [], "total": 0, "offset": 0, "limit": 50}
        if path == "/admin/dkim":
            return []
        raise BackendError(404, "not found")

    async def put(self, path: str, body=None):
        self.calls.append(("PUT", path))
        address, _, what = path.removeprefix("/admin/users/").partition("/")
        u = self.user(address)
        if what == "password":
            u["password"], u["generation"] = body["password"], u["generation"] + 1
        elif what == "quota":
            u["quota_bytes"] = body["quota_bytes"]
        elif what == "role":
            u["role"] = body["role"]

    async def post(self, path: str, body=None, **params):
        self.calls.append(("POST", path))
        if path == "/admin/users":
            if body["address"] in self.users:
                raise BackendError(409, f"user {body['address']} exists")
            self.add(body["address"], body["password"], quota=body["quota_bytes"])
            return self.public(self.users[body["address"]])
        address, _, what = path.removeprefix("/admin/users/").partition("/")
        self.user(address)["disabled"] = what == "disable"

    async def delete(self, path: str, **params):
        self.calls.append(("DELETE", path))
        self.users.pop(unquote(path.removeprefix("/admin/users/")), None)


class FakeQueue:
    def __init__(self):
        self.message = {
            "queue_id": "QA1", "trace_id": "tr", "mail_from": "ann@example.test", "size": 1234,
            "received_at": "2026-12-07T21:00:00.000+00:00", "recipients": [
                {"address": "bob@remote.test", "state": "deferred", "attempts": 2, "last_status": "4.7.1",
                 "last_error": "451 4.7.1 greylisted <script>", "remote_mta": "mx1.remote.test"}],
        }  # fmt: skip
        self.trace = [
            {"step": "ingress", "service": "smtp-ingress", "at": "2026-12-07T21:00:00.010+00:00", "duration_ms": 10.0},
            {"step": "delivery", "service": "delivery", "at": "2026-12-07T21:00:00.090+00:00", "duration_ms": 40.0,
             "detail": "mx1.remote.test: 451 4.7.1 greylisted"},
            {"step": "delivery", "service": "delivery", "at": "2026-12-07T21:00:01.010+00:00", "duration_ms": 10.0},
        ]  # fmt: skip
        self.held: set[str] = set()
        self.calls: list[tuple[str, str]] = []

    async def get(self, path: str, **params):
        self.calls.append(("GET", path))
        if path == "/queue/counts":
            return {"states": {"queued": 1, "held": len(self.held)}, "messages": 1}
        if path == "/queue":
            items = [self.message] if params.get("sender") == self.message["mail_from"] else []
            return {"items": items, "total": len(items), "offset": 0, "limit": 50}
        if path == "/queue/" + self.message["queue_id"]:
            return self.message
        if path == "/trace/" + self.message["queue_id"]:
            return self.trace
        if path == "/dead":
            letter = {"seq": 7, "service": "delivery", "subject": "delivery.job", "reason": "boom <x>", "size": 10,
                      "queue_ids": ["QA1"], "at": "2026-12-07T21:00:00+00:00"}  # fmt: skip
            return {"items": [letter], "total": 1, "next": None}
        if path == "/queue/" + self.message["queue_id"] + "/headers":
            return {"fields": [["Subject", "<b>hello</b>"], ["Message-ID", "<m1@example.test>"]], "kept": True}
        raise BackendError(404, "not found")

    async def post(self, path: str, body=None, **params):
        self.calls.append(("POST", path))
        queue_id, _, action = path.removeprefix("/queue/").partition("/")
        if action == "hold":
            self.held.add(queue_id)
        return {"count": 1}

    async def delete(self, path: str, **params):
        self.calls.append(("DELETE", path))


class FakeBackend:
    def __init__(self):
        self.store, self.queue = FakeStore(), FakeQueue()

    async def authenticate(self, address: str, password: str):
        u = self.store.users.get(address)
        if u is None or u["disabled"] or u["password"] != password:
            return None
        token = secrets.token_hex(8)
        self.store.tokens[token] = (address, u["generation"])
        return {"address": address, "token": token}

    async def session_expired(self, token: str) -> bool:
        address, generation = self.store.tokens.get(token, ("", 0))
        u = self.store.users.get(address)
        return u is None or u["disabled"] or u["generation"] != generation

    async def close(self):
        pass
