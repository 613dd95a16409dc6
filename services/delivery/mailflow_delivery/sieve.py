"""Sieve at final delivery: each local user's active script (RFC 5228) decides where a message is filed.

`SieveFilter.expand(item, mail_from)` turns one DeliverItem for an envelope recipient into the items the
store should take: None when no user it reaches has an active script (the item goes as it is: the
common case, two cached look-ups), else one item per user and mailbox, each addressed to that user's
login (the store resolves a login to itself). The first item of a user keeps the job's idempotency key;
further copies (fileinto :copy, several fileinto) get "<key>/sieve/<mailbox>", so a retried job stores
each copy once. A script that discards leaves no item for its user.

The recipient's users (Directory.resolve) and each user's active script (SieveSource.active_script,
compiled once) are cached for `ttl` seconds, so a script uploaded now applies within that. Failures:
- the store does not answer (resolve or the script): the exception goes to the caller, which defers
  the job (a filter we could not read is not "no filter");
- the script does not compile (it was stored by hand, or by an older version) or fails while running
  (too many actions): the message goes to INBOX as if there were no script, with an
  `X-Mailflow-Sieve-Error:` header telling the user why, and mailflow_delivery_sieve_total{result="error"}
  counts it. A message is never lost to a script's error.
Quarantined items (`junk`, DMARC p=quarantine) are not filtered: they go to the user's Junk mailbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace

from mailflow.cache import Cache
from mailflow.sieve.interpret import Envelope, Message, SieveRuntimeError, run
from mailflow.sieve.script import Script, SieveError, compile
from mailflow.store.api import ActiveScript, DeliverItem, Directory, SieveSource
from mailflow_delivery import metrics

log = logging.getLogger(__name__)

MAX_SCRIPT_BYTES = 1024 * 1024  # the store caps what it keeps (MAILFLOW_STORE_SIEVE_MAX_SCRIPT_BYTES)
ERROR_HEADER = b"X-Mailflow-Sieve-Error"
_MISSING = object()  # not in the cache (None there: the user has no active script)


@dataclass(frozen=True)
class Loaded:
    name: str
    compiled: Script | SieveError
    mailboxes: frozenset[str]
    library: dict[str, Script | SieveError]  # the user's other scripts, for include


def _compiled(data: bytes) -> Script | SieveError:
    try:
        return compile(data, MAX_SCRIPT_BYTES)
    except SieveError as exc:
        return exc


def _load(active: ActiveScript) -> Loaded:
    library = {n: _compiled(data) for n, data in active.others}
    return Loaded(active.name, _compiled(active.script), frozenset(active.mailboxes), library)


def error_header(name: str, exc: Exception) -> bytes:
    text = f'script "{name}" failed ({exc}); the message was kept in INBOX'
    text = "".join(c if c.isprintable() else " " for c in text)[:300]
    return ERROR_HEADER + b": " + text.encode("utf-8", "replace") + b"\r\n"


def with_header(body: bytes, header: bytes) -> bytes:
    """`header` after the Return-Path: line, which stays first (RFC 5321 §4.4)."""
    if body.startswith(b"Return-Path:"):
        i = body.find(b"\n") + 1
        if i > 0:
            return body[:i] + header + body[i:]
    return header + body


class SieveFilter:
    def __init__(self, directory: Directory, source: SieveSource, ttl: float = 10.0, size: int = 10_000):
        self.directory, self.source, self.ttl = directory, source, ttl
        self._users: Cache[str, tuple[str, ...]] = Cache(size)
        self._scripts: Cache[str, Loaded | None] = Cache(size)

    async def users(self, address: str) -> tuple[str, ...]:
        key = address.lower()
        hit = self._users.get(key)
        if hit is None:
            res = await self.directory.resolve(address)
            hit = res.users if res.status == "local" else ()
            self._users.put(key, hit, self.ttl)
        return hit

    async def script(self, login: str) -> Loaded | None:
        key = login.lower()
        hit = self._scripts.get(key, _MISSING)
        if hit is not _MISSING:
            return hit  # type: ignore[return-value]
        active = await self.source.active_script(login)
        loaded = None
        if active is not None:
            loaded = await asyncio.to_thread(_load, active)
        self._scripts.put(key, loaded, self.ttl)
        return loaded

    async def expand(self, item: DeliverItem, mail_from: str) -> list[DeliverItem] | None:
        if item.junk:
            return None
        users = await self.users(item.recipient)
        loaded = await asyncio.gather(*(self.script(u) for u in users))
        if not any(loaded):
            return None
        message, envelope = Message(item.body), Envelope(mail_from, item.recipient)
        out: list[DeliverItem] = []
        for user, script in zip(users, loaded, strict=True):
            mine = replace(item, recipient=user)
            if script is None:
                out.append(mine)
                continue
            try:
                if isinstance(script.compiled, SieveError):
                    raise script.compiled
                outcome = await asyncio.to_thread(
                    run, script.compiled, message, envelope, script.mailboxes, time.time(), script.library, script.name
                )  # CPU (a body test parses MIME): off the event loop
            except (SieveError, SieveRuntimeError) as exc:
                metrics.SIEVE.labels("error").inc()
                log.warning("sieve script failed, kept in INBOX: %s", exc, extra={"user": user, "queue_id": item.queue_id})
                out.append(replace(mine, body=with_header(item.body, error_header(script.name, exc)), mailbox="INBOX"))
                continue
            if outcome.discarded:
                metrics.SIEVE.labels("discarded").inc()
                log.info("discarded by sieve", extra={"user": user, "queue_id": item.queue_id})
                continue
            metrics.SIEVE.labels("filed").inc()
            for n, d in enumerate(outcome.deliveries):
                key = item.key if n == 0 else f"{item.key}/sieve/{d.mailbox}"
                out.append(replace(mine, key=key, mailbox=d.mailbox, flags=d.flags, create=d.create))
        return out
