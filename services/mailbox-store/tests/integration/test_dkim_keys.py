"""DKIM key sets over real HTTP (SQLite and PostgreSQL): made pending, activated, retired, removed; the
private keys reach delivery's route only, never a listing, a repr or an error."""

from __future__ import annotations

import base64
import logging

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa


def _public_of(pem: str) -> bytes:
    key = serialization.load_pem_private_key(pem.encode(), None)
    if isinstance(key, rsa.RSAPrivateKey):
        assert key.key_size == 2048
        return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


async def test_keygen_activate_rotate_remove(admin, client, domain, caplog):
    caplog.set_level(logging.DEBUG)
    r = await admin.post("/admin/dkim", json={"domain": domain, "selector": "One"})
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["selector"] == "one" and first["state"] == "pending" and first["activated_at"] is None
    assert [(x["selector"], x["algorithm"]) for x in first["records"]] == [
        ("one-rsa", "rsa-sha256"),
        ("one-ed25519", "ed25519-sha256"),
    ]
    assert "PRIVATE" not in r.text
    assert await client.dkim_signing_key(domain) is None  # pending keys never sign

    assert (await admin.post("/admin/dkim", json={"domain": domain, "selector": "one"})).status_code == 409
    assert (await admin.post("/admin/dkim", json={"domain": domain, "selector": "-bad"})).status_code == 422
    assert (await admin.post("/admin/dkim", json={"domain": "nowhere.test"})).status_code == 404
    assert (await admin.post(f"/admin/dkim/{domain}/nokey/activate")).status_code == 404

    r = await admin.post(f"/admin/dkim/{domain}/one/activate")
    assert r.status_code == 200 and r.json()["state"] == "active" and r.json()["activated_at"]
    key = await client.dkim_signing_key(domain)
    assert key is not None and (key.domain, key.selector) == (domain, "one")
    published = {x["selector"]: base64.b64decode(x["public_key"]) for x in first["records"]}
    assert _public_of(key.rsa_private.get_secret_value()) == published["one-rsa"]
    assert _public_of(key.ed25519_private.get_secret_value()) == published["one-ed25519"]
    assert "PRIVATE" not in repr(key) and "PRIVATE" not in str(key)

    # rotate: the new set (default selector) is pending until activated; then the old one is retired
    r = await admin.post("/admin/dkim", json={"domain": domain})
    second = r.json()["selector"]
    assert r.status_code == 201 and second.startswith("mf") and len(second) == 10
    third = (await admin.post("/admin/dkim", json={"domain": domain})).json()["selector"]
    assert third == second + "b"
    assert (await client.dkim_signing_key(domain)).selector == "one"
    assert (await admin.post(f"/admin/dkim/{domain}/{second}/activate")).status_code == 200
    assert (await client.dkim_signing_key(domain)).selector == second
    listed = (await admin.get("/admin/dkim", params={"domain": domain})).json()
    assert [(k["selector"], k["state"]) for k in listed] == [("one", "retired"), (second, "active"), (third, "pending")]
    everything = (await admin.get("/admin/dkim")).text
    assert "PRIVATE" not in everything and domain in everything

    r = await admin.delete(f"/admin/dkim/{domain}/{second}")
    assert r.status_code == 409 and "PRIVATE" not in r.text
    assert (await admin.delete(f"/admin/dkim/{domain}/one")).status_code == 204
    assert (await admin.delete(f"/admin/dkim/{domain}/one")).status_code == 404
    assert (await admin.delete(f"/admin/dkim/{domain}/{second}", params={"force": "true"})).status_code == 204
    assert await client.dkim_signing_key(domain) is None
    assert all("PRIVATE" not in rec.getMessage() for rec in caplog.records)


async def test_the_nearest_domain_with_an_active_key_signs(admin, client, domain):
    sub = f"mail.{domain}"
    assert (await admin.post("/admin/domains", json={"name": sub})).status_code == 201
    assert (await admin.post("/admin/dkim", json={"domain": domain, "selector": "p"})).status_code == 201
    await admin.post(f"/admin/dkim/{domain}/p/activate")
    assert (await client.dkim_signing_key(f"deep.{sub}")).domain == domain  # a parent's key aligns (relaxed)
    assert (await client.dkim_signing_key(sub.upper())).domain == domain
    assert (await admin.post("/admin/dkim", json={"domain": sub, "selector": "s"})).status_code == 201
    await admin.post(f"/admin/dkim/{sub}/s/activate")
    assert (await client.dkim_signing_key(sub)).domain == sub
    assert (await client.dkim_signing_key(domain)).domain == domain
    assert await client.dkim_signing_key("elsewhere.test") is None
    assert await client.dkim_signing_key("test") is None  # never a TLD
    assert await client.dkim_signing_key("not a domain") is None
    # a domain deleted takes its keys with it
    assert (await admin.delete(f"/admin/domains/{sub}")).status_code == 204
    assert (await client.dkim_signing_key(sub)).domain == domain
    assert (await admin.post(f"/admin/dkim/{sub}/s/activate")).status_code == 404
