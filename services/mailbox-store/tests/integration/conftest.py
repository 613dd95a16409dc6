"""Users alice and bob in the test's own domain, logged in through the StoreClient."""

from __future__ import annotations

import pytest_asyncio


def message(subject: str = "hello", body: str = "Hello there.", extra: str = "") -> bytes:
    return (
        f"From: Carol <carol@elsewhere.test>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
        f"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@elsewhere.test>\r\n"
        f"{extra}\r\n{body}\r\n"
    ).encode()


@pytest_asyncio.fixture(loop_scope="module")
async def people(admin, client, domain):
    """(alice, bob) Principals; passwords alice-pw and bob-pw."""
    for user in ("alice", "bob"):
        r = await admin.post("/admin/users", json={"address": f"{user}@{domain}", "password": f"{user}-pw"})
        assert r.status_code == 201, r.text
    alice = await client.authenticate(f"alice@{domain}", "alice-pw")
    bob = await client.authenticate(f"bob@{domain}", "bob-pw")
    return alice, bob
