"""Users alice and bob (example.test) on the running service, logged in through the StoreClient."""

from __future__ import annotations

import pytest


def message(subject: str = "hello", body: str = "Hello there.", extra: str = "") -> bytes:
    return (
        f"From: Carol <carol@elsewhere.test>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
        f"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@elsewhere.test>\r\n"
        f"{extra}\r\n{body}\r\n"
    ).encode()


@pytest.fixture
async def people(admin, client):
    await admin.post("/admin/domains", json={"name": "example.test"})
    for user in ("alice", "bob"):
        r = await admin.post(
            "/admin/users", json={"address": f"{user}@example.test", "password": f"{user}-pw"}
        )
        assert r.status_code == 201
    alice = await client.authenticate("alice@example.test", "alice-pw")
    bob = await client.authenticate("bob@example.test", "bob-pw")
    return alice, bob
