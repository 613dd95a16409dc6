"""The console's only way to the other services: their REST APIs (the same ones `mailflow` uses).

`Backend.store` and `Backend.queue` carry the admin token, held here and never sent to a browser;
`authenticate` and `session_expired` use the store's internal group with the service token; `sieve`
calls the store's /access/sieve/* with the service token and the user's own session token. A call that
gets an HTTP error raises `BackendError(status, detail)` with the server's detail (what the CLI prints);
a service that does not answer raises it with status 503 and a short reason. The pages show the detail,
never a traceback.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from mailflow.contracts.rest import ADMIN_TOKEN_HEADER, SERVICE_TOKEN_HEADER


class BackendError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class Api:
    def __init__(self, client: httpx.AsyncClient, base_url: str, name: str, headers: dict[str, str]):
        self.client, self.base_url, self.name, self.headers = client, base_url.rstrip("/"), name, headers

    async def request(
        self, method: str, path: str, body: Any = None, params: dict | None = None, headers: dict | None = None
    ) -> Any:
        try:
            r = await self.client.request(
                method,
                self.base_url + path,
                json=body,
                params={k: v for k, v in (params or {}).items() if v not in (None, "")},
                headers=self.headers | (headers or {}),
            )
        except httpx.HTTPError as exc:
            raise BackendError(503, f"{self.name} did not answer ({type(exc).__name__})") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            if not isinstance(detail, str):
                detail = json.dumps(detail)[:500]
            raise BackendError(r.status_code, detail[:500])
        if r.status_code == 204 or not r.content:
            return None
        return r.json()

    async def get(self, path: str, **params) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Any = None, **params) -> Any:
        return await self.request("POST", path, body, params)

    async def put(self, path: str, body: Any = None) -> Any:
        return await self.request("PUT", path, body)

    async def delete(self, path: str, **params) -> Any:
        return await self.request("DELETE", path, params=params)


class Backend:
    def __init__(self, store_url: str, queue_url: str, admin_token: str, service_token: str, timeout: float = 10.0):
        self.client = httpx.AsyncClient(timeout=timeout)
        admin = {ADMIN_TOKEN_HEADER: admin_token}
        self.store = Api(self.client, store_url, "mailbox-store", admin)
        self.queue = Api(self.client, queue_url, "queue", admin)
        self.internal = Api(self.client, store_url, "mailbox-store", {SERVICE_TOKEN_HEADER: service_token})

    async def authenticate(self, address: str, password: str) -> dict | None:
        """The store's principal {address, token, ...} or None (wrong login, disabled user)."""
        body = {"username": address, "password": password, "service": "web"}
        return (await self.internal.post("/internal/authenticate", body))["principal"]

    async def session_expired(self, token: str) -> bool:
        """Whether the store no longer accepts this login (password changed, user disabled or deleted)."""
        return bool((await self.internal.post("/internal/sessions/check", {"tokens": [token]}))["expired"])

    async def sieve(self, token: str, op: str, body: dict) -> Any:
        """/access/sieve/<op> as the user of the store session `token` (their own scripts only: the store
        scopes every call to the session's user). A session the store no longer accepts is a 401."""
        return await self.internal.request("POST", f"/access/sieve/{op}", body, headers={"Authorization": f"Bearer {token}"})

    async def close(self) -> None:
        await self.client.aclose()
