"""Access for imap-pop3: every Mailboxes call of mailflow.store.api, scoped to the session's user.

The session comes from a verified token (sessions.py); the user id in it is the only one these calls
ever use. Changes are published as MailboxEvents with origin = the session id. The first time a
delivered message's body is fetched, a "retrieved" TraceEvent is published (once: the pending row is
deleted by exactly one fetch). Errors as in service.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from mailflow import mime
from mailflow.contracts.messages import TraceEvent
from mailflow.errors import Invalid
from mailflow.store.api import (
    AppendResult,
    CopyResult,
    DeletedUse,
    MailboxInfo,
    MailboxStatus,
    QuotaUse,
)
from mailflow.store.search import SearchKey
from mailflow_mailbox_store import directory, folders, messages, metrics, names, scripts, sections, sorting
from mailflow_mailbox_store.blobs import in_batches
from mailflow_mailbox_store.learning import Learner
from mailflow_mailbox_store.listings import Listing, ListingCache
from mailflow_mailbox_store.messages import ChangeSet, Metas
from mailflow_mailbox_store.parsing import prepare, unpack
from mailflow_mailbox_store.search import search as run_search
from mailflow_mailbox_store.service import SERVICE, StoreCore
from mailflow_mailbox_store.sessions import Session
from mailflow_mailbox_store.storage import Change
from mailflow_mailbox_store.uidset import UidSet

log = logging.getLogger(__name__)


@dataclass
class Selection:
    listing: Listing
    status: MailboxStatus
    recent_from: int | None
    permanent_keywords: bool
    vanished: tuple[list[int], bool] | None = None  # messages.vanished_since, when the SELECT asked


class Store(StoreCore):
    def __init__(
        self,
        *args,
        listing_cache_bytes: int = 128 * 1024 * 1024,
        listing_cache_min_messages: int = 2_000,
        sieve_max_script_bytes: int = 64 * 1024,
        sieve_max_scripts: int = 16,
        **kw,
    ):
        super().__init__(*args, **kw)
        self.listings = ListingCache(listing_cache_bytes, listing_cache_min_messages)
        self.sieve_limits = (sieve_max_script_bytes, sieve_max_scripts)
        self._background: set[asyncio.Task] = set()
        self.learner: Learner | None = None  # rspamd training; open_store sets it when configured

    async def close(self) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=10)
        if self.learner is not None:
            await self.learner.close()
        await super().close()

    # --- mailboxes ----------------------------------------------------------------------------------

    async def list_mailboxes(self, s: Session) -> list[MailboxInfo]:
        return await self.db.read(folders.list_mailboxes, s.user_id)

    async def create_mailbox(self, s: Session, name: str, special_use: str | None = None) -> MailboxInfo:
        info = await self.db.write(folders.create_mailbox, s.user_id, name, special_use)
        await self.publish([Change(s.user_id, info.id, info.name, "mailbox_created")], s.sid)
        return info

    async def delete_mailbox(self, s: Session, name: str) -> None:
        mailbox_id = await self.db.write(folders.delete_mailbox, s.user_id, name)
        await self.publish([Change(s.user_id, mailbox_id, name, "mailbox_deleted")], s.sid)

    async def rename_mailbox(self, s: Session, old: str, new: str) -> None:
        if names.mailbox(old) == "INBOX":
            changes = await self.db.write(messages.rename_inbox, s.user_id, new)
        else:
            renamed = await self.db.write(folders.rename_mailbox, s.user_id, old, new)
            changes = [Change(s.user_id, mid, name, "mailbox_renamed") for mid, name in renamed]
        await self.publish(changes, s.sid)

    async def subscribe(self, s: Session, name: str, subscribed: bool) -> None:
        await self.db.write(folders.subscribe, s.user_id, name, subscribed)

    async def subscriptions(self, s: Session) -> list[str]:
        return await self.db.read(folders.subscriptions, s.user_id)

    async def status(self, s: Session, name: str) -> MailboxStatus:
        return await self.db.read(folders.status, s.user_id, name, self.listings)

    async def quota(self, s: Session) -> QuotaUse:
        return await self.db.read(directory.quota_use, s.user_id)

    async def deleted(self, s: Session, name: str) -> DeletedUse:
        return await self.db.read(folders.deleted_use, s.user_id, name)

    async def select(
        self, s: Session, name: str, claim_recent: bool = True, vanished_since: int | None = None
    ) -> Selection:
        """The listing, the status, and the UID from which the listed messages are \\Recent for this
        session (None: none are). SELECT claims them (messages.claim_recent): the first session to select
        after they arrived is the only one to see them \\Recent; EXAMINE (no claim) sees the unclaimed
        ones and leaves them so. The status's RECENT counts what this session sees. `vanished_since`
        (QRESYNC): also the UIDs expunged after that MODSEQ, from the same snapshot as the listing."""
        lst, row, keywords_full, vanished = await self.db.read(
            messages.selection, s.user_id, name, self.listings, vanished_since
        )
        recent_from: int | None = row.first_recent_uid
        if claim_recent:
            recent_from = None
            if lst.uids and lst.uids[-1] >= row.first_recent_uid:
                recent_from = await self.db.write(messages.claim_recent, s.user_id, row.id, row.uidnext)
        status = lst.status(row.uidnext if recent_from is None else recent_from, row.name)
        return Selection(lst, status, recent_from, not keywords_full, vanished)

    async def claim_recent(self, s: Session, mailbox_id: int, upto: int, claim: bool) -> int | None:
        """For a session that learnt of new messages below `upto`: from which UID they are \\Recent to it
        (messages.claim_recent; None: to none of them). The mark is read first: when another session
        has claimed them already (every session but one, when many have the mailbox selected), no
        write transaction is spent on finding that out."""
        mark = await self.db.read(messages.claim_recent, s.user_id, mailbox_id, upto, False)
        if not claim:
            return mark
        if mark >= upto:
            return None
        return await self.db.write(messages.claim_recent, s.user_id, mailbox_id, upto)

    async def changes(self, s: Session, mailbox_id: int, since_modseq: int) -> ChangeSet:
        return await self.db.read(messages.changes, s.user_id, mailbox_id, since_modseq, self.listings)

    # --- messages -----------------------------------------------------------------------------------

    async def fetch_meta(self, s: Session, mailbox_id: int, uids: UidSet) -> Metas:
        return await self.db.read(messages.fetch_meta, s.user_id, mailbox_id, uids)

    async def fetch_save_dates(self, s: Session, mailbox_id: int, uids: UidSet) -> list[tuple]:
        """(uid, saved_at or None) per message: messages.save_dates."""
        return await self.db.read(messages.save_dates, s.user_id, mailbox_id, uids)

    async def fetch_parsed(self, s: Session, mailbox_id: int, uids: UidSet) -> list[tuple[int, bytes]]:
        rows = await self.db.read(messages.fetch_parsed, s.user_id, mailbox_id, uids)
        return [(uid, unpack(p)) for uid, p in rows]

    async def bodies(
        self, s: Session, mailbox_id: int, uids: UidSet, at_most: int
    ) -> tuple[list[tuple[int, str, int]], list[bytes] | None]:
        """(uid, locator, size) of the bodies, and the bodies themselves, read in the same transaction,
        when they add up to at most `at_most` bytes (else None: read them in batches, `read_bodies`).
        Records the first retrieval of delivered messages."""
        started = time.monotonic()

        def read(tx):
            rows, pending = messages.body_locators(tx, s.user_id, mailbox_id, uids)
            small = sum(r[2] for r in rows) <= at_most
            return rows, pending, self.blobs.get_many([r[1] for r in rows], tx) if small else None

        rows, pending, data = await self.db.read(read)
        self._retrieved_later(mailbox_id, pending, started)
        return rows, data

    async def fetch_sections(
        self, s: Session, mailbox_id: int, uids: UidSet, spec: str
    ) -> list[tuple[int, bytes]]:
        """BODY[<spec>] of each message, cut from the stored body with its stored parse (RFC 3501 §6.4.5),
        in one read transaction. Invalid for a section-spec that can never be right. A spec that reaches
        into the body (anything but the header) counts as retrieving it."""
        started = time.monotonic()

        def cut(tx) -> tuple[list[tuple[int, bytes]], list]:
            rows, pending = messages.section_sources(tx, s.user_id, mailbox_id, uids)
            out = []
            for batch in in_batches(rows, lambda r: r[3]):
                raws = self.blobs.get_many([r[1] for r in batch], tx)
                for (uid, _, parsed, _), raw in zip(batch, raws, strict=True):
                    try:
                        out.append((uid, sections.section(raw, mime.from_json(unpack(parsed)), spec)))
                    except ValueError as exc:
                        raise Invalid(f"bad section {spec!r}: {exc}") from exc
            return out, pending

        out, pending = await self.db.read(cut)
        if not spec.upper().startswith("HEADER") and not spec.upper().endswith("MIME"):
            self._retrieved_later(mailbox_id, pending, started)
        return out

    async def read_bodies(self, locators: list[str]) -> list[bytes]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.db.readers, self.blobs.get_many, locators)

    def _retrieved_later(self, mailbox_id: int, pending: list, started: float) -> None:
        """Record first retrievals after the answer, off the FETCH path; the task is kept until done."""
        if pending:
            task = asyncio.create_task(self._retrieved(mailbox_id, pending, started))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _retrieved(self, mailbox_id: int, pending: list, started: float) -> None:
        try:
            done = set(await self.db.write(messages.mark_retrieved, mailbox_id, [p[0] for p in pending]))
        except Exception:
            log.warning("could not record a retrieval", exc_info=True)
            return
        for uid, queue_id, trace_id in pending:
            if uid in done:
                await self.publisher.trace(
                    TraceEvent(
                        queue_id=queue_id,
                        trace_id=trace_id,
                        step="retrieved",
                        service=SERVICE,
                        duration_ms=(time.monotonic() - started) * 1000,
                        detail=f"uid {uid}",
                    )
                )

    async def store_flags(
        self,
        s: Session,
        mailbox_id: int,
        uids: UidSet,
        op: str,
        flags: list[str],
        unchanged_since: int | None,
    ) -> tuple[Metas, list[int]]:
        if op not in ("add", "remove", "replace"):
            raise Invalid(f"unknown flag operation {op}")
        updated, modified, changes = await self.db.write(
            messages.store_flags, s.user_id, mailbox_id, uids, op, flags, unchanged_since
        )
        await self.publish(changes, s.sid)
        return updated, modified

    async def expunge(self, s: Session, mailbox_id: int, uids: UidSet | None) -> list[int]:
        gone, changes = await self.db.write(messages.expunge, s.user_id, mailbox_id, uids)
        await self.publish(changes, s.sid)
        return gone

    async def copy(
        self, s: Session, mailbox_id: int, uids: UidSet, dest: str, move: bool = False
    ) -> CopyResult:
        result, changes = await self.db.write(messages.copy, s.user_id, mailbox_id, uids, dest, move)
        await self.publish(changes, s.sid)
        if self.learner is not None and result.dest_uids:
            try:  # into Junk or out of it: rspamd learns, in the background (learning.py)
                spam, bodies = await self.db.read(messages.training, s.user_id, mailbox_id, dest, result.dest_uids)
            except Exception:
                log.warning("could not look up what to learn from a copy", exc_info=True)
            else:
                if spam is not None:
                    self.learner.moved(spam, bodies)
        return result

    async def append(
        self, s: Session, name: str, items: list[tuple[bytes, list[str], datetime | None]]
    ) -> AppendResult:
        """APPEND (one item) and MULTIAPPEND: all the messages, with consecutive UIDs, or none."""
        if not items:
            raise Invalid("nothing to append")
        for body, _, _ in items:
            if len(body) > self.max_message_bytes:
                raise Invalid(f"message larger than {self.max_message_bytes} bytes")
        now = int(time.time())
        prepared = [
            (await self._cpu(prepare, body), flags, int(when.timestamp()) if when else now) for body, flags, when in items
        ]
        (uidvalidity, uids), changes = await self.db.write(
            messages.append, s.user_id, name, prepared, bodies=[body for body, _, _ in items]
        )
        metrics.APPENDED_BYTES.inc(sum(len(body) for body, _, _ in items))
        await self.publish(changes, s.sid)
        return AppendResult(uidvalidity=uidvalidity, uids=uids)

    async def search(self, s: Session, mailbox_id: int, key: SearchKey) -> list[int]:
        return await self.db.read(run_search, s.user_id, mailbox_id, key, self.blobs)

    async def sort(
        self, s: Session, mailbox_id: int, key: SearchKey, criteria: list[tuple[str, bool]]
    ) -> list[int]:
        if not criteria or any(name not in sorting.CRITERIA for name, _ in criteria):
            raise Invalid("bad sort criteria")
        uids, computed = await self.db.read(sorting.sort_tx, s.user_id, mailbox_id, key, criteria, self.blobs)
        await self._fill(computed)
        return uids

    async def thread(
        self, s: Session, mailbox_id: int, key: SearchKey, algorithm: str
    ) -> list[tuple[int, int]]:
        if algorithm not in sorting.ALGORITHMS:
            raise Invalid("unknown threading algorithm")
        nodes, computed = await self.db.read(
            sorting.thread_tx, s.user_id, mailbox_id, key, algorithm, self.blobs
        )
        await self._fill(computed)
        return nodes

    async def _fill(self, computed: list[tuple]) -> None:
        """Keep the sort keys computed for bodies stored before they existed; failing that costs only time."""
        if not computed:
            return
        try:
            await self.db.write(sorting.fill, computed)
        except Exception:
            log.warning("sort keys not written back", exc_info=True)

    # --- POP3 ---------------------------------------------------------------------------------------

    async def pop3_lock(self, s: Session) -> str:
        return await self.db.write(messages.pop3_lock, s.user_id, s.sid, self.pop3_lock_ttl)

    async def pop3_unlock(self, s: Session, token: str) -> None:
        await self.db.write(messages.pop3_unlock, s.user_id, token)

    # --- Sieve scripts (ManageSieve) ------------------------------------------------------------------

    async def list_scripts(self, s: Session) -> list[tuple[str, bool]]:
        return await self.db.read(scripts.list_scripts, s.user_id)

    async def get_script(self, s: Session, name: str) -> bytes:
        return await self.db.read(scripts.get_script, s.user_id, name)

    async def have_space(self, s: Session, name: str, size: int) -> None:
        await self.db.read(scripts.have_space, s.user_id, name, size, *self.sieve_limits)

    async def put_script(self, s: Session, name: str, script: bytes) -> None:
        await self.db.write(scripts.put_script, s.user_id, name, script, *self.sieve_limits)

    async def set_active(self, s: Session, name: str) -> None:
        await self.db.write(scripts.set_active, s.user_id, name)

    async def delete_script(self, s: Session, name: str) -> None:
        await self.db.write(scripts.delete_script, s.user_id, name)

    async def rename_script(self, s: Session, old: str, new: str) -> None:
        await self.db.write(scripts.rename_script, s.user_id, old, new)

    async def vacation_due(self, login: str, key: str, days: int) -> bool:
        return await self.db.write(scripts.vacation_due, login, key, days, int(time.time()))

    async def active_script(self, login: str) -> tuple[str, bytes, list[str], list[tuple[str, bytes]]] | None:
        return await self.db.read(scripts.active_script, login)
