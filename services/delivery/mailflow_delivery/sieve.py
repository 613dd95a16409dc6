"""Sieve at final delivery: each local user's active script (RFC 5228) decides where a message is filed,
and what it sends (redirect, reject/ereject, vacation: mailflow.sieve.replies builds them, `Mailer`
queues them like any message, with a queue id derived from the job, the user and the action, so a
retried job queues the same message, which the queue takes once).

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
- what a script sends cannot be queued (NATS away): the exception goes to the caller, which defers the
  job; a retry queues the same messages again (the queue keeps one of each), but a vacation reply
  whose memory was recorded before the failure is not sent again (a reply lost, never mail);
- a redirect of a message that already has more than forwarding.MAX_HOPS Received: fields (a loop of
  redirects and forwards) fails the script: kept in INBOX with the error header.
Replies (reject, vacation) go from the null sender; a redirect keeps the original envelope sender and is
forwarded mail for the user (`Recipient.forwarded_for`): delivery ARC-seals it with the user's domain's
keys on its way to another domain, as it does an alias's copy (forwarding.py).
Quarantined items (`junk`, DMARC p=quarantine) are not filtered: they go to the user's Junk mailbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Protocol

from mailflow import ids
from mailflow.bodies import Bodies, inline_ref, should_inline
from mailflow.cache import Cache
from mailflow.contracts import subjects
from mailflow.contracts.messages import QueuedMessage, QueuedMessages, Recipient
from mailflow.errors import ServiceUnavailable
from mailflow.jspub import group_msg_id, publish_until_acked
from mailflow.sieve import replies
from mailflow.sieve.interpret import Envelope, Message, Outcome, SieveRuntimeError, run
from mailflow.sieve.script import Script, SieveError, compile
from mailflow.store.api import ActiveScript, DeliverItem, Directory, SieveSource
from mailflow_delivery import metrics
from mailflow_delivery.forwarding import MAX_HOPS

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


@dataclass(frozen=True)
class Outgoing:
    queue_id: str
    mail_from: str  # "" for replies
    rcpt: str
    body: bytes
    kind: str  # redirect | reject | vacation
    # a redirect is forwarded mail, as an alias's copy to another domain is (forwarding.py): the user it
    # was redirected for, so delivery ARC-seals it with their domain's keys and counts its hops
    forwarded_for: str | None = None


class Mailer(Protocol):
    async def send(self, msg: Outgoing, trace_id: str) -> None:
        """Durable in the queue when it returns; ServiceUnavailable otherwise."""
        ...


class JetStreamMailer:
    """Into stream MAIL as smtp-ingress's envelopes go (a group of one), the body inline when small,
    else into BODY first."""

    def __init__(self, js, bodies: Bodies, timeout: float = 10.0):
        self.js, self.bodies, self.timeout = js, bodies, timeout

    async def send(self, msg: Outgoing, trace_id: str) -> None:
        size = len(msg.body)
        try:
            inline = should_inline(size, 1)
            ref = inline_ref(msg.queue_id, size) if inline else await self.bodies.put(msg.queue_id, msg.body)
            qm = QueuedMessage(queue_id=msg.queue_id, trace_id=trace_id, mail_from=msg.mail_from,
                               rcpt_to=[Recipient(address=msg.rcpt, forwarded_for=msg.forwarded_for)], body_ref=ref, size=size,
                               body=msg.body if inline else None)  # fmt: skip
            data = QueuedMessages(messages=[qm]).to_bytes()
            await publish_until_acked(self.js, subjects.MAIL_QUEUED, data, group_msg_id("mail", [msg.queue_id]), self.timeout)
        except ServiceUnavailable:
            raise
        except Exception as exc:
            raise ServiceUnavailable(f"could not queue a Sieve {msg.kind}: {exc}") from exc


class SieveFilter:
    def __init__(
        self, directory: Directory, source: SieveSource, ttl: float = 10.0, size: int = 10_000,
        mailer: Mailer | None = None, hostname: str = "localhost",
    ):  # fmt: skip
        """`mailer` None: a script that would send something fails (its message is kept)."""
        self.directory, self.source, self.ttl = directory, source, ttl
        self.mailer, self.hostname = mailer, hostname
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
        sends: list[Outgoing] = []
        for user, script in zip(users, loaded, strict=True):
            mine = replace(item, recipient=user)
            if script is None:
                out.append(mine)
                continue
            try:
                if isinstance(script.compiled, SieveError):
                    raise script.compiled
                now = time.time()
                outcome = await asyncio.to_thread(
                    run, script.compiled, message, envelope, script.mailboxes, now, script.library, script.name
                )  # CPU (a body test parses MIME): off the event loop
                mine_out = await self.outgoing(outcome, item, user, message, envelope, now)
            except (SieveError, SieveRuntimeError) as exc:
                metrics.SIEVE.labels("error").inc()
                log.warning("sieve script failed, kept in INBOX: %s", exc, extra={"user": user, "queue_id": item.queue_id})
                out.append(replace(mine, body=with_header(item.body, error_header(script.name, exc)), mailbox="INBOX"))
                continue
            sends += mine_out
            if outcome.discarded:
                metrics.SIEVE.labels("discarded").inc()
                log.info("discarded by sieve", extra={"user": user, "queue_id": item.queue_id})
                continue
            metrics.SIEVE.labels("filed" if outcome.deliveries else "sent").inc()
            for n, d in enumerate(outcome.deliveries):
                key = item.key if n == 0 else f"{item.key}/sieve/{d.mailbox}"
                out.append(replace(mine, key=key, mailbox=d.mailbox, flags=d.flags, create=d.create))
        for msg in sends:  # before the store takes anything: a failure defers the whole job
            await self.mailer.send(msg, item.trace_id)  # type: ignore[union-attr]
            metrics.SIEVE_SENT.labels(msg.kind).inc()
            log.info("sieve %s queued", msg.kind, extra={"queue_id": item.queue_id, "sieve_queue_id": msg.queue_id})
        return out

    async def outgoing(self, outcome: Outcome, item: DeliverItem, user: str, message: Message, envelope: Envelope,
                       now: float) -> list[Outgoing]:  # fmt: skip
        """The messages `outcome` sends for `user`; SieveRuntimeError when they cannot go (no mailer, a
        redirect loop). A vacation reply is asked of the store's memory here (it records it)."""
        if not (outcome.redirects or outcome.reject is not None or outcome.vacation is not None):
            return []
        if self.mailer is None:
            raise SieveRuntimeError("this server sends nothing for Sieve (no mailer)")
        seed = f"{item.key}\0{user}"
        out: list[Outgoing] = []
        if outcome.redirects and replies.hops(item.body) > MAX_HOPS:
            raise SieveRuntimeError(f"redirect refused: more than {MAX_HOPS} Received: fields (a loop)")
        for target in outcome.redirects:
            body = replies.redirected(item.body, self.hostname, target, now)
            out.append(Outgoing(ids.derived_queue_id(f"{seed}\0redirect\0{target.lower()}"), envelope.mail_from, target, body, "redirect", user))
        if outcome.reject is not None:
            key = ids.derived_queue_id(f"{seed}\0reject")
            body = replies.rejection(message, envelope, outcome.reject, user, self.hostname, now, key.ljust(32, "0"))
            if body is not None:
                out.append(Outgoing(key, "", envelope.mail_from, body, "reject"))
        v = outcome.vacation
        if v is not None:
            body = replies.vacation_reply(v, message, envelope, user, self.hostname, now)
            if body is not None and await self.source.vacation_due(user, replies.vacation_key(v, envelope.mail_from), v.days):
                out.append(Outgoing(ids.derived_queue_id(f"{seed}\0vacation"), "", envelope.mail_from, body, "vacation"))
        return out
