"""The admin group over real HTTP, exactly as mailflow.contracts.rest documents it."""

from __future__ import annotations

import itertools

import httpx

_n = itertools.count(1)


def fresh() -> str:
    return f"admin{next(_n)}.test"


async def test_admin_needs_its_token(service):
    async with httpx.AsyncClient(base_url=service.url) as c:
        assert (await c.get("/admin/domains")).status_code == 401
        r = await c.get("/admin/domains", headers={"X-Mailflow-Admin-Token": "wrong"})
        assert r.status_code == 401
        # the service token is not the admin token
        r = await c.get("/admin/domains", headers={"X-Mailflow-Token": "service-token-for-tests"})
        assert r.status_code == 401


async def test_domains_users_aliases_lifecycle(admin):
    d = fresh()
    r = await admin.post("/admin/domains", json={"name": d.upper()})
    assert r.status_code == 201 and r.json()["name"] == d
    assert (await admin.post("/admin/domains", json={"name": d})).status_code == 409
    assert (await admin.post("/admin/domains", json={"name": "bad domain"})).status_code == 422

    r = await admin.post(
        "/admin/users", json={"address": f"Alice@{d}", "password": "pw", "quota_bytes": 5000}
    )
    assert r.status_code == 201, r.text
    assert r.json()["address"] == f"alice@{d}" and r.json()["quota_bytes"] == 5000
    assert (
        await admin.post("/admin/users", json={"address": f"alice@{d}", "password": "x"})
    ).status_code == 409
    assert (
        await admin.post("/admin/users", json={"address": "a@nowhere.test", "password": "x"})
    ).status_code == 404

    u = (await admin.get(f"/admin/users/alice@{d}")).json()
    assert u["used_bytes"] == 0 and u["messages"] == 0
    assert (await admin.get(f"/admin/users/nobody@{d}")).status_code == 404
    assert (await admin.put(f"/admin/users/alice@{d}/password", json={"password": "new"})).status_code == 204
    assert (await admin.put(f"/admin/users/alice@{d}/quota", json={"quota_bytes": None})).status_code == 204
    assert (await admin.get(f"/admin/users/alice@{d}")).json()["quota_bytes"] is None
    assert (await admin.put(f"/admin/users/nobody@{d}/quota", json={"quota_bytes": 1})).status_code == 404

    r = await admin.post("/admin/aliases", json={"address": f"sales@{d}", "targets": [f"alice@{d}"]})
    assert r.status_code == 201 and r.json()["targets"] == [f"alice@{d}"]
    r = await admin.post("/admin/aliases", json={"address": f"@{d}", "targets": [f"alice@{d}"]})
    assert r.status_code == 201
    r = await admin.post("/admin/aliases", json={"address": "x@other.test", "targets": [f"alice@{d}"]})
    assert r.status_code == 404
    aliases = (await admin.get("/admin/aliases", params={"domain": d})).json()
    assert aliases["total"] == 2 and {a["address"] for a in aliases["items"]} == {f"sales@{d}", f"@{d}"}
    assert (await admin.delete(f"/admin/aliases/sales@{d}")).status_code == 204
    assert (await admin.delete(f"/admin/aliases/sales@{d}")).status_code == 404

    domains = {
        x["name"]: x for x in (await admin.get("/admin/domains", params={"limit": 1000})).json()["items"]
    }
    assert domains[d]["users"] == 1
    assert (await admin.delete(f"/admin/domains/{d}")).status_code == 409
    assert (await admin.delete(f"/admin/domains/{d}", params={"force": "true"})).status_code == 204
    assert (await admin.get(f"/admin/users/alice@{d}")).status_code == 404
    names = [x["name"] for x in (await admin.get("/admin/domains", params={"limit": 1000})).json()["items"]]
    assert d not in names


async def test_pagination(admin):
    d = fresh()
    await admin.post("/admin/domains", json={"name": d})
    for i in range(7):
        r = await admin.post("/admin/users", json={"address": f"u{i}@{d}", "password": "pw"})
        assert r.status_code == 201
    seen = []
    offset = 0
    while True:
        page = (await admin.get("/admin/users", params={"domain": d, "offset": offset, "limit": 3})).json()
        assert page["total"] == 7 and page["limit"] == 3 and page["offset"] == offset
        if not page["items"]:
            break
        seen += [u["address"] for u in page["items"]]
        offset += len(page["items"])
    assert seen == sorted(f"u{i}@{d}" for i in range(7))
    assert (await admin.get("/admin/users", params={"limit": 0})).status_code == 422
    assert (await admin.get("/admin/domains", params={"offset": -1})).status_code == 422
