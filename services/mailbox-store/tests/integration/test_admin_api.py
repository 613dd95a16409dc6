"""The admin group over real HTTP, exactly as mailflow.contracts.rest documents it."""

from __future__ import annotations

import httpx


async def test_admin_needs_its_token(service):
    async with httpx.AsyncClient(base_url=service.url) as c:
        assert (await c.get("/admin/domains")).status_code == 401
        r = await c.get("/admin/domains", headers={"X-Mailflow-Admin-Token": "wrong"})
        assert r.status_code == 401
        # the service token is not the admin token
        r = await c.get("/admin/domains", headers={"X-Mailflow-Token": "service-token-for-tests"})
        assert r.status_code == 401


async def test_domains_users_aliases_lifecycle(admin):
    r = await admin.post("/admin/domains", json={"name": "Example.TEST"})
    assert r.status_code == 201 and r.json()["name"] == "example.test"
    assert (await admin.post("/admin/domains", json={"name": "example.test"})).status_code == 409
    assert (await admin.post("/admin/domains", json={"name": "bad domain"})).status_code == 422

    r = await admin.post(
        "/admin/users", json={"address": "Alice@example.test", "password": "pw", "quota_bytes": 5000}
    )
    assert r.status_code == 201, r.text
    assert r.json()["address"] == "alice@example.test" and r.json()["quota_bytes"] == 5000
    assert (
        await admin.post("/admin/users", json={"address": "alice@example.test", "password": "x"})
    ).status_code == 409
    assert (
        await admin.post("/admin/users", json={"address": "a@nowhere.test", "password": "x"})
    ).status_code == 404

    u = (await admin.get("/admin/users/alice@example.test")).json()
    assert u["used_bytes"] == 0 and u["messages"] == 0
    assert (await admin.get("/admin/users/nobody@example.test")).status_code == 404
    assert (
        await admin.put("/admin/users/alice@example.test/password", json={"password": "new"})
    ).status_code == 204
    assert (
        await admin.put("/admin/users/alice@example.test/quota", json={"quota_bytes": None})
    ).status_code == 204
    assert (await admin.get("/admin/users/alice@example.test")).json()["quota_bytes"] is None
    assert (
        await admin.put("/admin/users/nobody@example.test/quota", json={"quota_bytes": 1})
    ).status_code == 404

    r = await admin.post(
        "/admin/aliases", json={"address": "sales@example.test", "targets": ["alice@example.test"]}
    )
    assert r.status_code == 201 and r.json()["targets"] == ["alice@example.test"]
    r = await admin.post(
        "/admin/aliases", json={"address": "@example.test", "targets": ["alice@example.test"]}
    )
    assert r.status_code == 201
    r = await admin.post(
        "/admin/aliases", json={"address": "x@other.test", "targets": ["alice@example.test"]}
    )
    assert r.status_code == 404
    aliases = (await admin.get("/admin/aliases", params={"domain": "example.test"})).json()
    assert aliases["total"] == 2 and {a["address"] for a in aliases["items"]} == {
        "sales@example.test",
        "@example.test",
    }
    assert (await admin.delete("/admin/aliases/sales@example.test")).status_code == 204
    assert (await admin.delete("/admin/aliases/sales@example.test")).status_code == 404

    domains = (await admin.get("/admin/domains")).json()
    assert domains["items"][0]["users"] == 1
    assert (await admin.delete("/admin/domains/example.test")).status_code == 409
    assert (await admin.delete("/admin/domains/example.test", params={"force": "true"})).status_code == 204
    assert (await admin.get("/admin/users/alice@example.test")).status_code == 404
    assert (await admin.get("/admin/domains")).json()["total"] == 0


async def test_pagination(admin):
    await admin.post("/admin/domains", json={"name": "example.test"})
    for i in range(7):
        r = await admin.post("/admin/users", json={"address": f"u{i}@example.test", "password": "pw"})
        assert r.status_code == 201
    seen = []
    offset = 0
    while True:
        page = (await admin.get("/admin/users", params={"offset": offset, "limit": 3})).json()
        assert page["total"] == 7 and page["limit"] == 3 and page["offset"] == offset
        if not page["items"]:
            break
        seen += [u["address"] for u in page["items"]]
        offset += len(page["items"])
    assert seen == sorted(f"u{i}@example.test" for i in range(7))
    assert (await admin.get("/admin/users", params={"limit": 0})).status_code == 422
    assert (await admin.get("/admin/users", params={"domain": "example.test"})).json()["total"] == 7
