"""SCRAM-SHA-256 in the store (RFC 5802 §3, RFC 7677): the verifier is made at user creation, password
change and the first password login of a user who has none (or one with other parameters);
/internal/scram/start answers a stable made-up salt for a user who cannot log in; /internal/scram/finish
checks the proof and returns a principal and the server signature. The client side is scramp, the
protocol side mailflow.scram.ServerExchange, as the IMAP, POP3 and SMTP services run it. On SQLite and
PostgreSQL."""

from __future__ import annotations

import scramp

from mailflow import scram
from mailflow.scram import ServerExchange, Verifier


async def verifier_of(service, login: str) -> str | None:
    sql = "SELECT scram_verifier FROM users WHERE address = :a"
    return await service.store.db.read(lambda tx: tx.value(sql, {"a": login}))


async def set_verifier(service, login: str, value: str | None) -> None:
    sql = "UPDATE users SET scram_verifier = :v WHERE address = :a"
    await service.store.db.write(lambda tx: tx.run(sql, {"v": value, "a": login}))


async def exchange(client, user: str, password: str):
    """A whole exchange through the StoreClient: (principal or None, whether scramp accepted the server)."""
    c = scramp.ScramClient([scram.MECHANISM], user, password)
    server = ServerExchange(scram.MECHANISM, {}, False)
    first = server.start(c.get_client_first().encode())
    salt, iterations = await client.scram_start(first.user)
    c.set_server_first(server.challenge(salt, iterations).decode())
    auth_message, proof = server.finish(c.get_client_final().encode())
    done = await client.scram_finish(first.user, auth_message, proof, "imap")
    if done is None:
        return None, False
    principal, signature = done
    c.set_server_final(scram.server_final(signature).decode())  # raises unless the signature is right
    return principal, True


async def test_scram_login_and_password_change(client, admin, domain, service):
    alice = f"alice@{domain}"
    assert (await admin.post("/admin/users", json={"address": alice, "password": "pencil"})).status_code == 201
    stored = await verifier_of(service, alice)
    assert stored.startswith("SCRAM-SHA-256$4096:")
    principal, proved = await exchange(client, alice, "pencil")
    assert proved and principal.address == alice and principal.token
    assert (await exchange(client, alice, "wrong"))[0] is None
    assert (await exchange(client, alice.upper(), "pencil"))[0] is not None  # names compare as the store does
    await admin.put(f"/admin/users/{alice}/password", json={"password": "changed"})
    assert await verifier_of(service, alice) != stored
    assert (await exchange(client, alice, "pencil"))[0] is None
    assert (await exchange(client, alice, "changed"))[0] is not None


async def test_the_verifier_is_never_listed(admin, domain, service):
    bob = f"bob@{domain}"
    await admin.post("/admin/users", json={"address": bob, "password": "bob-pw"})
    for body in ((await admin.get(f"/admin/users/{bob}")).text, (await admin.get("/admin/users")).text):
        assert "SCRAM" not in body and "scram" not in body and "verifier" not in body
    secret = (await verifier_of(service, bob)).rsplit("$", 1)[1]
    assert secret not in (await admin.get("/admin/users")).text


async def test_start_does_not_tell_who_exists(client, admin, domain, service):
    carol, dee = f"carol@{domain}", f"dee@{domain}"
    for user in (carol, dee):
        await admin.post("/admin/users", json={"address": user, "password": "pw"})
    real = await client.scram_start(carol)
    assert real == (Verifier.decode(await verifier_of(service, carol)).salt, 4096)
    nobody = await client.scram_start(f"nobody@{domain}")
    assert nobody == await client.scram_start(f"nobody@{domain}") and nobody[1] == 4096
    assert len(nobody[0]) == len(real[0]) and nobody != await client.scram_start(f"nobody2@{domain}")
    assert await client.scram_start("not an address") == await client.scram_start("not an address")
    assert (await admin.post(f"/admin/users/{dee}/disable")).status_code == 204
    disabled = await client.scram_start(dee)
    assert disabled != (Verifier.decode(await verifier_of(service, dee)).salt, 4096)
    assert (await exchange(client, dee, "pw"))[0] is None  # disabled: refused like a wrong password
    assert (await exchange(client, f"nobody@{domain}", "pw"))[0] is None


async def test_users_without_a_verifier_get_one_at_their_next_password_login(client, admin, domain, service):
    erin = f"erin@{domain}"
    await admin.post("/admin/users", json={"address": erin, "password": "erin-pw"})
    await set_verifier(service, erin, None)  # a user from before SCRAM
    fake = await client.scram_start(erin)
    assert fake == await client.scram_start(erin)
    assert (await exchange(client, erin, "erin-pw"))[0] is None
    assert await client.authenticate(erin, "wrong") is None
    assert await verifier_of(service, erin) is None  # only a password that checked out is learnt
    assert await client.authenticate(erin, "erin-pw") is not None
    assert Verifier.decode(await verifier_of(service, erin)).iterations == 4096
    assert (await exchange(client, erin, "erin-pw"))[1]
    # a verifier with other parameters is made again at the next password login (a cached one too)
    await set_verifier(service, erin, Verifier.make("erin-pw", 5000).encode())
    assert (await exchange(client, erin, "erin-pw"))[1]  # it still works meanwhile
    assert await client.authenticate(erin, "erin-pw") is not None
    assert Verifier.decode(await verifier_of(service, erin)).iterations == 4096


async def test_finish_refuses_garbage(client, admin, domain):
    frank = f"frank@{domain}"
    await admin.post("/admin/users", json={"address": frank, "password": "pw"})
    assert await client.scram_finish(frank, b"n=frank,r=a,r=ab,s=AAAA,i=4096,c=biws,r=ab", b"x" * 32) is None
    assert await client.scram_finish(frank, b"anything", b"") is None
    assert await client.scram_finish("not an address", b"anything", b"x" * 32) is None
