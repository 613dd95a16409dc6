"""The real mailbox-store in the test process, for the tests of the services that use it.

`LocalStore` runs mailbox-store's own `app.run` (its core, SQLite and blobs in a temporary folder, its
REST API on 127.0.0.1 port 0) on an event loop in a thread of its own: once per test session, since a
start costs about half a second. `LocalStore.fresh()` empties it (every domain goes, with its users,
mail and aliases; ids are never reused, so nothing of an earlier test can show through) and returns a
`TestStore`: the real `StoreClient` to it, which is what imap-pop3 and delivery use in production, plus
what a test needs to arrange and inspect the store, which the Protocols of mailflow.store.api leave out.

Events: the store's Publisher here is `MemoryPublisher`, which hands each MailboxEvent to `TestStore.listeners`
in the store's thread, after the commit and before the answer, as the NATS publisher would send it.
A test drops events by taking its listener out. The folder is in /dev/shm when there is one: the
store fsyncs every commit, and the tests need speed there, not durability.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mailflow.contracts.messages import MailboxEvent, TraceEvent, UserRevoked
from mailflow.contracts.rest import DkimKeyPublic
from mailflow.errors import Conflict
from mailflow.store.client import StoreClient
from mailflow_mailbox_store import app
from mailflow_mailbox_store.access import Store
from mailflow_mailbox_store.sessions import Sessions, derive_key
from mailflow_mailbox_store.settings import Settings

SERVICE_TOKEN = "service-token-for-tests"


class MemoryPublisher:
    """The store's Publisher in tests: keeps what would be published, and hands each MailboxEvent to the
    listeners as it goes (a listener that raises misses that event, as a NATS subscriber might)."""

    def __init__(self) -> None:
        self.events: list[MailboxEvent] = []
        self.revocations: list[UserRevoked] = []
        self.traces: list[TraceEvent] = []
        self.listeners: list[Callable[[MailboxEvent], None]] = []

    def clear(self) -> None:
        self.events.clear()
        self.revocations.clear()
        self.traces.clear()

    async def mailbox(self, event: MailboxEvent) -> None:
        self.events.append(event)
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):
                listener(event)

    async def revoked(self, event: UserRevoked) -> None:
        self.revocations.append(event)

    async def trace(self, event: TraceEvent) -> None:
        self.traces.append(event)


class LocalStore:
    def __init__(self, folder: Path):
        self.publisher = MemoryPublisher()
        self.settings = Settings(
            service_token=SERVICE_TOKEN,
            admin_token="admin-token-for-tests",
            session_key="session-key-for-tests",
            database_url=f"sqlite:///{folder / 'store.db'}",
            blob_dir=str(folder / "blobs"),
            http_listen="127.0.0.1:0",
            argon2_time_cost=1,  # tests need speed, not strength
            argon2_memory_kib=1024,
            argon2_parallelism=1,
            maintenance_interval=3600,
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="local-store", daemon=True)
        self.thread.start()
        self.core: Store
        self.url = ""
        self.call(self._start(), timeout=60)

    @classmethod
    @contextlib.contextmanager
    def running(cls):
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        with tempfile.TemporaryDirectory(prefix="mailflow-store-", dir=base) as folder:
            store = cls(Path(folder))
            try:
                yield store
            finally:
                store.close()

    async def _start(self) -> None:
        self._stop, ready, holder = asyncio.Event(), asyncio.Event(), {}
        self._task = asyncio.create_task(app.run(self.settings, self._stop, ready, self.publisher, holder))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            waiter.cancel()
            self._task.result()
            raise RuntimeError("mailbox-store did not start")
        self.core = holder["store"]
        self.url = f"http://127.0.0.1:{ready.port}"  # type: ignore[attr-defined]

    def call(self, coro, timeout: float = 30):
        """Run a coroutine on the store's loop and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def read(self, fn, *args):
        return self.call(self.core.db.read(fn, *args))

    def close(self) -> None:
        async def stop() -> None:
            self._stop.set()
            await asyncio.wait_for(self._task, 30)

        try:
            self.call(stop(), timeout=40)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def fresh(self, *users: tuple[str, str]) -> TestStore:
        """An empty store (no domains, aliases or listeners; sessions of earlier tests end) but for these
        (address, password) users."""
        self.publisher.listeners.clear()
        self.publisher.clear()

        async def empty() -> None:
            domains, _ = await self.core.list_domains(0, 1000)
            for d in domains:
                await self.core.delete_domain(d.name, force=True)

        self.call(empty())
        store = TestStore(self)
        for address, password in users:
            store.add_user(address, password)
        return store


class TestStore(StoreClient):
    """A StoreClient to a LocalStore, with the set-up and look-up calls tests need (they block the caller,
    and may be called from any thread or event loop but the store's)."""

    __test__ = False  # not a test class, despite its name

    def __init__(self, local: LocalStore):
        super().__init__(local.url, SERVICE_TOKEN)
        self.local = local

    @property
    def listeners(self) -> list[Callable[[MailboxEvent], None]]:
        return self.local.publisher.listeners

    def add_domain(self, name: str) -> None:
        with contextlib.suppress(Conflict):
            self.local.call(self.local.core.create_domain(name))

    def add_user(self, address: str, password: str, quota_bytes: int | None = None) -> int:
        self.add_domain(address.rpartition("@")[2])
        self.local.call(self.local.core.create_user(address, password, quota_bytes))
        return self.user_id(address)

    def add_alias(self, address: str, targets: list[str]) -> None:
        self.local.call(self.local.core.create_alias(address, targets))

    def add_dkim(self, domain: str, selector: str) -> DkimKeyPublic:
        """A DKIM key set for `domain` (added if need be), made and activated: it signs from now on."""
        self.add_domain(domain)
        self.local.call(self.local.core.create_dkim_key(domain, selector))
        return self.local.call(self.local.core.activate_dkim_key(domain, selector))

    def set_password(self, address: str, password: str) -> None:
        self.local.call(self.local.core.set_password(address, password))

    def drop_scram_verifier(self, address: str) -> None:
        """The user as a store from before SCRAM left it: a password hash and no verifier."""
        sql = "UPDATE users SET scram_verifier = NULL WHERE address = :a"
        self.local.call(self.local.core.db.write(lambda tx: tx.run(sql, {"a": address.lower()})))

    def scram_verifier(self, address: str) -> str | None:
        sql = "SELECT scram_verifier FROM users WHERE address = :a"
        return self.local.read(lambda tx: tx.value(sql, {"a": address.lower()}))

    def set_quota(self, address: str, quota_bytes: int | None) -> None:
        self.local.call(self.local.core.set_quota(address, quota_bytes))

    def user_id(self, address: str) -> int:
        sql = "SELECT id FROM users WHERE address = :a"
        return self.local.read(lambda tx: tx.value(sql, {"a": address.lower()}))

    def expire_sessions(self) -> None:
        """Every principal issued so far stops working, as when the store's session key changes."""
        core = self.local.core
        core.sessions = Sessions(derive_key(secrets.token_hex(16)), core.sessions.ttl)

    def pop3_locked(self, address: str) -> bool:
        """Does a POP3 session hold this user's maildrop lock?"""
        sql = (
            "SELECT 1 FROM pop3_locks l JOIN users u ON u.id = l.user_id"
            " WHERE u.address = :a AND l.expires_at >= :now"
        )
        now = int(time.time())
        return bool(self.local.read(lambda tx: tx.value(sql, {"a": address.lower(), "now": now})))

    def messages(self, address: str, mailbox: str | None = "INBOX") -> list[bytes]:
        """The stored bodies in a user's mailbox (every mailbox for None), in UID order."""
        sql = (
            "SELECT b.locator FROM messages m JOIN mailboxes x ON x.id = m.mailbox_id"
            " JOIN users u ON u.id = x.user_id JOIN blobs b ON b.id = m.blob_id WHERE u.address = :a"
            + (" AND x.name = :n" if mailbox else "")
            + " ORDER BY x.id, m.uid"
        )
        rows = self.local.read(lambda tx: tx.all(sql, {"a": address.lower(), "n": mailbox}))
        return self.local.call(self.local.core.read_bodies([r[0] for r in rows]))
