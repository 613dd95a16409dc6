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


async def test_alias_targets_elsewhere_are_forwards_with_limits_and_no_loops(admin):
    d = fresh()
    await admin.post("/admin/domains", json={"name": d})
    await admin.post("/admin/users", json={"address": f"bob@{d}", "password": "pw"})

    async def add(address: str, *targets: str) -> httpx.Response:
        return await admin.post("/admin/aliases", json={"address": address, "targets": list(targets)})

    r = await add(f"team@{d}", f"bob@{d}", "Carol@Naver.TEST", "carol@naver.test")
    assert r.status_code == 201 and r.json()["targets"] == [f"bob@{d}", "carol@naver.test"]
    r = await add(f"x@{d}", "not an address")
    assert r.status_code == 422 and "not an address" in r.json()["detail"]
    r = await add(f"x@{d}", "carol@[127.0.0.1]")  # a target is a name: no address literals
    assert r.status_code == 422
    r = await add(f"x@{d}", *(f"u{i}@naver.test" for i in range(101)))
    assert r.status_code == 422 and "at most 100 targets" in r.json()["detail"]

    assert (await add(f"self@{d}", f"self@{d}")).status_code == 422
    assert (await add(f"a@{d}", f"b@{d}")).status_code == 201
    assert (await add(f"b@{d}", f"c@{d}", "dave@naver.test")).status_code == 201
    r = await add(f"c@{d}", f"a@{d}")  # c -> a -> b -> c
    assert r.status_code == 422 and r.json()["detail"] == f"alias loop: c@{d} would lead back to itself"
    assert (await add(f"c@{d}", f"team@{d}")).status_code == 201  # no loop: team leads to bob and carol

    # 100 targets each are fine, but not 150 external addresses reached through two of them
    assert (await add(f"l1@{d}", *(f"a{i}@naver.test" for i in range(100)))).status_code == 201
    assert (await add(f"l2@{d}", *(f"b{i}@naver.test" for i in range(50)))).status_code == 201
    r = await add(f"both@{d}", f"l1@{d}", f"l2@{d}")
    assert r.status_code == 422 and "more than 100 external addresses" in r.json()["detail"]


async def test_a_users_role_is_user_until_an_admin_makes_it_admin(admin):
    d = fresh()
    await admin.post("/admin/domains", json={"name": d})
    await admin.post("/admin/users", json={"address": f"root@{d}", "password": "pw"})
    assert (await admin.get(f"/admin/users/root@{d}")).json()["role"] == "user"
    assert (await admin.put(f"/admin/users/root@{d}/role", json={"role": "admin"})).status_code == 204
    assert (await admin.get(f"/admin/users/root@{d}")).json()["role"] == "admin"
    listed = (await admin.get("/admin/users", params={"domain": d})).json()["items"]
    assert [u["role"] for u in listed] == ["admin"]
    assert (await admin.put(f"/admin/users/root@{d}/role", json={"role": "root"})).status_code == 422
    assert (await admin.put(f"/admin/users/nobody@{d}/role", json={"role": "admin"})).status_code == 404
    assert (await admin.put(f"/admin/users/root@{d}/role", json={"role": "user"})).status_code == 204
    assert (await admin.get(f"/admin/users/root@{d}")).json()["role"] == "user"
