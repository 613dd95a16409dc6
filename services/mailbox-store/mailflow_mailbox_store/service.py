"""The store as one object: directory, delivery and admin (this module) and access (access.py), over
the database, the blob store, password hashing, session tokens and the event publisher.

HTTP routes only translate to and from these calls. Errors: NotFound, Conflict, Invalid, QuotaExceeded
(for the client to see), ServiceUnavailable (the database or the disk failed: temporary). Events and
trace records are published after the change committed; a failed publish never fails the change.
A password change, disable or delete revokes the user's sessions: from the commit on, this process
refuses their tokens (sessions.Generations), other store processes within `session_check_interval`,
and a UserRevoked event asks imap-pop3 to end them at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from mailflow import scram
from mailflow.cache import SingleFlight
from mailflow.contracts.messages import MailboxEvent, RevokeReason, TraceEvent, UserRevoked
from mailflow.errors import Invalid
from mailflow.store.api import DeliverItem, DeliverResult, Principal, Resolution
from mailflow_mailbox_store import admin, delivery, directory, dkim, metrics, names
from mailflow_mailbox_store.blobs import BlobStore
from mailflow_mailbox_store.db import Database, Tx
from mailflow_mailbox_store.events import Publisher
from mailflow_mailbox_store.parsing import prepare
from mailflow_mailbox_store.passwords import Passwords
from mailflow_mailbox_store.sessions import Generations, Session, Sessions
from mailflow_mailbox_store.storage import Change

log = logging.getLogger(__name__)

SERVICE = "mailbox-store"


class StoreCore:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        publisher: Publisher,
        passwords: Passwords,
        sessions: Sessions,
        default_quota: int | None = None,
        recipient_delimiter: str = "+",
        max_message_bytes: int = 64 * 1024 * 1024,
        pop3_lock_ttl: int = 15,
        session_check_interval: float = 1.0,
    ):
        self.db = db
        self.blobs = blobs
        self.publisher = publisher
        self.passwords = passwords
        self.sessions = sessions
        self.default_quota = default_quota
        self.delimiter = recipient_delimiter
        self.max_message_bytes = max_message_bytes
        self.pop3_lock_ttl = pop3_lock_ttl
        self.cpu = ThreadPoolExecutor(2, thread_name_prefix="store-cpu")  # argon2, MIME parsing
        self._verifying: SingleFlight[tuple, tuple[bool, str | None]] = SingleFlight()
        self.generations = Generations(
            lambda ids: self.db.read(directory.generations, ids), session_check_interval
        )

    async def close(self) -> None:
        self.cpu.shutdown(wait=True)

    async def _cpu(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.cpu, fn, *args)

    async def publish(self, changes: list[Change], origin: str | None = None) -> None:
        for c in changes:
            await self.publisher.mailbox(
                MailboxEvent(
                    user_id=c.user_id,
                    mailbox_id=c.mailbox_id,
                    mailbox=c.mailbox,
                    kind=c.kind,
                    uids=c.uids,
                    modseq=c.modseq,
                    origin=origin,
                    flags=c.flags,
                    since=c.since,
                )
            )

    # --- directory ----------------------------------------------------------------------------------

    async def resolve(self, address: str) -> Resolution:
        return await self.db.read(directory.resolve, address, self.delimiter)

    async def is_local_domain(self, domain: str) -> bool:
        return await self.db.read(directory.is_local_domain, domain)

    async def authenticate(self, username: str, password: str, service: str = "imap") -> Principal | None:
        try:
            login = names.address(username)
        except Invalid:
            metrics.LOGINS.labels("failed").inc()
            return None
        started, revision = time.monotonic(), self.generations.revision
        row, addresses = await self.db.read(self._look, login)
        if row is not None and row[4]:  # disabled: refused like a wrong password, at the same cost
            log.info("login refused: user disabled", extra={"user": login, "via": service})
            row = None
        if row is not None and self.passwords.cached(login, row[2], password):
            metrics.LOGINS.labels("cached").inc()
        else:
            ok, new_hash = await self._verify(login, row[2] if row else None, password)
            if not ok:
                metrics.LOGINS.labels("failed").inc()
                log.info("login failed", extra={"user": login, "via": service})
                return None
            metrics.LOGINS.labels("ok").inc()
            if new_hash:
                await self.db.write(admin.rehash, login, row[2], new_hash)
                row = (*row[:2], new_hash, *row[3:])
        if not self.passwords.verifier_current(row[5]):  # SCRAM can be used from the next login on
            verifier = await self._cpu(self.passwords.verifier, password)
            await self.db.write(admin.set_verifier, login, row[2], verifier)
        return self._principal(row, addresses, started, revision)

    @staticmethod
    def _look(tx: Tx, login: str):
        row = directory.user_row(tx, login)
        return row, (directory.addresses_of(tx, row[0], row[1]) if row else ())

    def _principal(self, row, addresses, started: float, revision: int) -> Principal:
        user_id, generation = row[0], row[3]
        self.generations.remember({user_id: generation}, started, revision)
        token, _ = self.sessions.issue(user_id, generation)
        return Principal(
            user_id=user_id, address=row[1], addresses=addresses, token=token, generation=generation
        )

    async def scram_start(self, username: str) -> tuple[bytes, int]:
        """SCRAM's first step: (salt, iterations) of the user's verifier; for an unknown or disabled user,
        or one with no verifier yet, a fake salt that stays the same (the last step fails for them)."""
        try:
            login = names.address(username)
        except Invalid:  # no such user can exist (and that the name is malformed tells nothing secret)
            return self.passwords.scram_parameters(username[:320], None)
        row = await self.db.read(directory.user_row, login)
        stored = row[5] if row is not None and not row[4] else None
        return self.passwords.scram_parameters(login, stored)

    async def scram_finish(
        self, username: str, auth_message: bytes, client_proof: bytes, service: str = "imap"
    ) -> tuple[Principal, bytes] | None:
        """SCRAM's last step: the principal and the server signature if the proof checks out with the
        user's verifier; None for a wrong proof, an unknown or disabled user, or one with no verifier."""
        try:
            login = names.address(username)
        except Invalid:
            metrics.LOGINS.labels("failed").inc()
            return None
        started, revision = time.monotonic(), self.generations.revision
        row, addresses = await self.db.read(self._look, login)
        verifier = None
        if row is not None and not row[4] and row[5] is not None:
            try:
                verifier = scram.Verifier.decode(row[5])
            except ValueError:
                log.warning("unreadable SCRAM verifier", extra={"user": login})
        if verifier is None or not verifier.check(auth_message, client_proof):
            metrics.LOGINS.labels("failed").inc()
            reason = "no verifier yet" if row is not None and row[5] is None else "wrong proof or no such user"
            log.info("login failed", extra={"user": login, "via": f"{service} scram", "reason": reason})
            return None
        metrics.LOGINS.labels("ok").inc()
        return self._principal(row, addresses, started, revision), verifier.signature(auth_message)

    async def _verify(self, login: str, stored_hash: str | None, password: str) -> tuple[bool, str | None]:
        """argon2 in a thread; concurrent logins with the same credentials share one check."""
        key = (login, stored_hash, self.passwords.mac(password))
        return await self._verifying.run(key, lambda: self._cpu(self.passwords.verify, login, stored_hash, password))

    async def session(self, token: str) -> Session | None:
        """The session of a token that is genuine, unexpired and of the user's current generation."""
        s = self.sessions.check(token)
        if s is None:
            metrics.SESSIONS_REFUSED.labels("bad").inc()
            return None
        if not await self.generations.valid(s):
            metrics.SESSIONS_REFUSED.labels("revoked").inc()
            return None
        return s

    async def dkim_signing_key(self, domain: str):
        return await self.db.read(dkim.signing_key, domain)

    async def expired_sessions(self, tokens: list[str]) -> list[int]:
        """Which of these tokens are refused now (their indexes): imap-pop3's periodic check, for
        sessions that make no calls (IDLE) in case a UserRevoked event was lost."""
        checked = [self.sessions.check(t) for t in tokens]
        current = await self.generations.current_many(s.user_id for s in checked if s is not None)
        return [
            i for i, s in enumerate(checked) if s is None or current.get(s.user_id) != s.generation
        ]

    async def _revoke(self, user_id: int, generation: int | None, reason: RevokeReason) -> None:
        """After the commit: refuse the old tokens here at once, and tell imap-pop3 to end the sessions."""
        self.generations.changed(user_id, generation)
        await self.publisher.revoked(UserRevoked(user_id=user_id, generation=generation, reason=reason))
        log.info("sessions revoked", extra={"user_id": user_id, "reason": reason})

    # --- delivery -----------------------------------------------------------------------------------

    async def deliver(self, items: list[DeliverItem]) -> list[DeliverResult]:
        started = time.monotonic()
        recipients = sorted({it.recipient for it in items})

        def resolve_all(tx: Tx) -> dict:
            return {r: directory.resolve_ids(tx, r, self.delimiter) for r in recipients}

        resolved = await self.db.read(resolve_all)
        results: list[DeliverResult | None] = [None] * len(items)
        todo: list[tuple[int, DeliverItem, dict[str, int]]] = []
        for i, it in enumerate(items):
            resolution, ids = resolved[it.recipient]
            if not ids:  # no local user: unknown, not ours, or an alias whose targets are all elsewhere
                detail = {"not_local": "not a local domain", "local": "no local user (forwarded only)"}
                results[i] = DeliverResult(
                    it.key, "unknown_user", permanent=True, detail=detail.get(resolution.status, "no such user")
                )
            elif len(it.body) > self.max_message_bytes:
                detail = f"message larger than {self.max_message_bytes} bytes"
                results[i] = DeliverResult(it.key, "failed", permanent=True, detail=detail)
            else:
                todo.append((i, it, ids))
        if todo:
            prepared = await self._cpu(lambda: [prepare(it.body) for _, it, _ in todo])
            now = int(time.time())
            plan = []
            for (i, it, ids), body in zip(todo, prepared, strict=True):
                bits, kws = delivery.item_flags(it.flags)
                when = int(it.internal_date.timestamp()) if it.internal_date else now
                plan.append(
                    delivery.Item(
                        i, it.key, ids, body, it.mailbox or "INBOX", bits, kws, when, it.queue_id, it.trace_id,
                        it.junk, it.create,
                    )
                )
            outcomes, changes = await self.db.write(
                delivery.deliver, plan, now, bodies=[it.body for _, it, _ in todo]
            )
            await self.publish(changes)
            elapsed_ms = (time.monotonic() - started) * 1000
            for out in outcomes:
                it = items[out.index]
                results[out.index] = DeliverResult(
                    it.key, out.status, permanent=out.permanent, detail=out.detail, users=tuple(out.users)
                )
                await self._after_store(it, out.stored, elapsed_ms)
        for r in results:
            metrics.DELIVERIES.labels(r.status).inc()
        return results  # type: ignore[return-value]

    async def _after_store(
        self, it: DeliverItem, stored: list[tuple[str, str, int]], elapsed_ms: float
    ) -> None:
        for login, mailbox, uid in stored:
            metrics.APPENDED_BYTES.inc(len(it.body))
            log.info(
                "stored",
                extra={
                    "queue_id": it.queue_id or None,
                    "trace_id": it.trace_id or None,
                    "user": login,
                    "mailbox": mailbox,
                    "uid": uid,
                    "size": len(it.body),
                },
            )
            if it.queue_id:
                await self.publisher.trace(
                    TraceEvent(
                        queue_id=it.queue_id,
                        trace_id=it.trace_id,
                        step="mailbox",
                        service=SERVICE,
                        duration_ms=elapsed_ms,
                        detail=f"{login} {mailbox} uid {uid}",
                    )
                )

    # --- admin --------------------------------------------------------------------------------------

    async def list_domains(self, offset: int, limit: int):
        return await self.db.read(admin.list_domains, offset, limit)

    async def create_domain(self, name: str):
        return await self.db.write(admin.create_domain, name)

    async def delete_domain(self, name: str, force: bool) -> None:
        for user_id in await self.db.write(admin.delete_domain, name, force):
            await self._revoke(user_id, None, "deleted")

    async def list_users(self, domain: str | None, offset: int, limit: int):
        return await self.db.read(admin.list_users, domain, offset, limit)

    async def get_user(self, address: str):
        return await self.db.read(admin.get_user, address)

    async def create_user(self, address: str, password: str, quota_bytes: int | None):
        names.address(address)  # refuse a bad address before spending argon2 on it
        password_hash, verifier = await self._cpu(self.passwords.hash_both, password)
        quota = self.default_quota if quota_bytes is None else quota_bytes
        return await self.db.write(admin.create_user, address, password_hash, verifier, quota)

    async def set_password(self, address: str, password: str) -> None:
        password_hash, verifier = await self._cpu(self.passwords.hash_both, password)
        user_id, generation = await self.db.write(admin.set_password, address, password_hash, verifier)
        self.passwords.forget(names.address(address))
        await self._revoke(user_id, generation, "password")

    async def set_disabled(self, address: str, disabled: bool) -> None:
        user_id, generation, changed = await self.db.write(admin.set_disabled, address, disabled)
        self.passwords.forget(names.address(address))
        if changed and disabled:
            await self._revoke(user_id, generation, "disabled")
        elif changed:
            self.generations.changed(user_id, generation)

    async def set_quota(self, address: str, quota_bytes: int | None) -> None:
        await self.db.write(admin.set_quota, address, quota_bytes)

    async def set_role(self, address: str, role: str) -> None:
        await self.db.write(admin.set_role, address, role)

    async def delete_user(self, address: str) -> None:
        user_id = await self.db.write(admin.delete_user, address)
        self.passwords.forget(names.address(address))
        await self._revoke(user_id, None, "deleted")

    async def list_aliases(self, domain: str | None, offset: int, limit: int):
        return await self.db.read(admin.list_aliases, domain, offset, limit)

    async def create_alias(self, address: str, targets: list[str]):
        return await self.db.write(admin.create_alias, address, targets)

    async def delete_alias(self, address: str) -> None:
        await self.db.write(admin.delete_alias, address)

    async def list_dkim_keys(self, domain: str | None):
        return await self.db.read(dkim.list_keys, domain)

    async def create_dkim_key(self, domain: str, selector: str | None):
        if selector:
            dkim.selector(selector)  # refuse a bad selector before making keys for it
        keys = await self._cpu(dkim.new_keys)
        created = await self.db.write(dkim.create, domain, selector, keys)
        log.info("dkim key made", extra={"domain": created.domain, "selector": created.selector})
        return created

    async def activate_dkim_key(self, domain: str, selector: str):
        key = await self.db.write(dkim.activate, domain, selector)
        log.info("dkim key active", extra={"domain": key.domain, "selector": key.selector})
        return key

    async def remove_dkim_key(self, domain: str, selector: str, force: bool) -> None:
        await self.db.write(dkim.remove, domain, selector, force)
        log.info("dkim key removed", extra={"domain": domain, "selector": selector})
