"""Policy: who may send, to whom, as whom; and what happens to an accepted message.

The session (session.py) has checked syntax and sequence; these hooks decide and return a reply
constant from replies.py. Failure rules:
  - a recipient the directory cannot check (store down, timeout, anything unexpected) is 451 4.4.3,
    never 550 ("can't check" is not "doesn't exist");
  - an AUTH the directory cannot check is 454 4.7.0;
  - an authenticated session's login is confirmed with the store again at MAIL FROM (when the last
    confirmation is older than auth_recheck_interval): revoked (password changed, user disabled or
    deleted) is 530 5.7.0 and the session is no longer authenticated; can't check is 451 4.4.3;
  - a message that is not durable in JetStream (any failure before both PubAcks) raises, and the
    session answers 451 4.3.0 (replies.to_reply): the client keeps it and retries, nothing is
    half-accepted.
  - mail on the MX listener from a client that has not authenticated goes through the sender
    authentication checks first (checks.py: SPF, DKIM, ARC, DMARC): their verdict may refuse it
    (550 5.7.x; 451 4.7.x when DNS could not tell), send it to the recipients' Junk, and it gives
    the Authentication-Results header that goes under our Received: line;
  - then, with rspamd_url set, rspamd scans it (rspamd.py): 550 5.7.1, 451 4.7.1, or X-Spam and Junk;
    rspamd away: accepted unscanned (or 451 4.7.1 with rspamd_fail_open off), never lost;
  - failed AUTHs are counted per client (mailflow.throttle, shared with imap-pop3): each waits
    auth_failure_delay before its 535; auth_failures_per_ip within the window and AUTH is 454 4.7.0.
No open relay: without AUTH a recipient must resolve to a local mailbox or alias; percent-hack, bang
paths and quoted "@" in a local part are refused outright, so a catch-all cannot turn them into relays.
An alias's targets in other domains (forwards) are queued as recipients of their own, taken from the
store's answer and never from the client: an outside sender reaches those fixed addresses and no other.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import UTC, datetime, timedelta

from mailflow import ids, scram_auth
from mailflow.contracts.messages import Recipient, TraceEvent
from mailflow.errors import ProtocolError
from mailflow.sasl import AuthzidRefused, SaslError
from mailflow.scram import ServerExchange
from mailflow.store.api import Principal, Resolution
from mailflow.throttle import LoginThrottle
from mailflow_smtp_ingress import headers, metrics
from mailflow_smtp_ingress import replies as R
from mailflow_smtp_ingress.checks import Checks, Verdict
from mailflow_smtp_ingress.directory import CachedDirectory
from mailflow_smtp_ingress.parser import Address, MailParams, RcptParams
from mailflow_smtp_ingress.queueing import MessageQueue
from mailflow_smtp_ingress.rspamd import SpamFilter
from mailflow_smtp_ingress.settings import Settings
from mailflow_smtp_ingress.state import Client, Transaction

log = logging.getLogger(__name__)

_RELAY_TRICK_CHARS = frozenset("%!@")  # user%other@local, other!user@local, "user@other"@local


def _rejected(stage: str, reason: str):
    return metrics.REJECTED.labels(stage, reason)


class IngressHandler:
    def __init__(
        self,
        settings: Settings,
        directory: CachedDirectory,
        queue: MessageQueue,
        throttle: LoginThrottle | None = None,
        checks: Checks | None = None,  # None: no sender authentication (every check off)
        spam: SpamFilter | None = None,  # None: no spam filtering (rspamd_url empty)
    ):
        self.settings = settings
        self.checks = checks
        self.spam = spam
        self.hostname = settings.hostname
        self.directory = directory
        self.queue = queue
        # auth_failures_per_ip failures in the window block a client (454); each failure waits a flat
        # auth_failure_delay before its 535
        delay = settings.auth_failure_delay
        self.throttle = throttle or LoginThrottle(
            settings.auth_failures_per_ip, settings.auth_failure_window, delay=delay, max_delay=delay
        )
        self._accepted = {name: metrics.ACCEPTED.labels(name) for name in metrics.LISTENERS}
        self._accepted_bytes = {name: metrics.ACCEPTED_BYTES.labels(name) for name in metrics.LISTENERS}
        self._r_unknown = _rejected("rcpt", "unknown_user")
        self._r_relay = _rejected("rcpt", "relay_denied")
        self._r_trick = _rejected("rcpt", "relay_trick")
        self._r_dir = _rejected("rcpt", "directory_unavailable")
        self._r_queue = _rejected("data", "queue_unavailable")
        self._r_spam = _rejected("data", "spam")
        self._r_spam_later = _rejected("data", "spam_deferred")

    # --- MAIL ------------------------------------------------------------------------------------------

    async def handle_MAIL(self, client: Client, sender: Address | None, params: MailParams) -> R.Reply:
        if client.principal is not None:
            revoked = await self._still_authenticated(client)
            if revoked is not None:
                return revoked
        if client.submission and client.principal is None:
            _rejected("mail", "auth_required").inc()
            return R.R530_AUTH_REQUIRED
        if client.principal is not None and sender is not None and not owns(client.principal, sender.address):
            _rejected("mail", "sender_not_owned").inc()
            log.info("sender not owned", extra={"user": client.principal.address, "sender": sender.address})
            return R.R553_SENDER_NOT_OWNED
        return R.R250_SENDER_OK

    async def _still_authenticated(self, client: Client) -> R.Reply | None:
        """None if the login still stands (or was confirmed a moment ago), else the reply to give."""
        now = time.monotonic()
        if now - client.auth_checked < self.settings.auth_recheck_interval:
            return None
        principal = client.principal
        try:
            expired = await self.directory.expired_sessions([principal.token])
        except Exception as exc:
            _rejected("mail", "auth_unchecked").inc()
            log.warning("login check unavailable: %s: %s", type(exc).__name__, exc)
            return R.R451_AUTH_UNCHECKED
        if principal.token in expired:
            client.principal = None
            _rejected("mail", "auth_revoked").inc()
            log.info("login revoked: authenticate again", extra={"user": principal.address})
            return R.R530_AUTH_REVOKED
        client.auth_checked = now
        return None

    # --- RCPT ------------------------------------------------------------------------------------------

    async def handle_RCPT(
        self, client: Client, tx: Transaction, rcpt: Address, params: RcptParams
    ) -> R.Reply:
        authenticated = client.principal is not None
        if not rcpt.domain:  # <postmaster> without a domain (RFC 5321 §4.5.1)
            rcpt = Address(rcpt.local, self.hostname.lower())
        if not authenticated:
            if not _RELAY_TRICK_CHARS.isdisjoint(rcpt.local) or rcpt.domain.startswith("["):
                self._r_trick.inc()
                return R.R550_RELAY_DENIED
        address = rcpt.address
        res = self.directory.cached(address)
        if res is None:
            try:
                res = await self.directory.resolve(address)
            except Exception as exc:
                self._r_dir.inc()
                log.warning(
                    "recipient lookup failed: %s: %s", type(exc).__name__, exc, extra={"rcpt": address}
                )
                return R.R451_DIRECTORY_DOWN
        reply = self._decide(res, address, authenticated)
        if res.forward and reply.code == 250:
            return self._forward(tx, res, rcpt.address, params)
        return reply

    def _forward(self, tx: Transaction, res: Resolution, given: str, params: RcptParams) -> R.Reply:
        """An alias with targets in other domains: each target becomes a recipient of its own (own job,
        result, retries and DSN to the envelope sender), with the alias as ORCPT unless the client gave
        one. The targets are the store's, never the client's: the MX relays to nothing else."""
        if len(tx.rcpts) + len(tx.forwards) + 1 + len(res.forward) > self.settings.max_expanded_recipients:
            _rejected("rcpt", "too_many_forwards").inc()
            return R.R452_TOO_MANY_RECIPIENTS
        orcpt = params.orcpt or f"rfc822;{res.address}"
        notify = list(params.notify)
        tx.forwards += [Recipient(address=t, notify=notify, orcpt=orcpt, forwarded_for=res.address) for t in res.forward]
        if not res.users:
            tx.forward_only.add(given.lower())
        return R.R250_RCPT_OK

    def _decide(self, res: Resolution, address: str, authenticated: bool) -> R.Reply:
        if res.status == "local":
            return R.R250_RCPT_OK
        if res.status == "unknown_user":
            self._r_unknown.inc()
            return R.R550_NO_SUCH_USER.with_text(f"<{address}>: Recipient address rejected: user unknown")
        if authenticated:  # not_local: authenticated users may send anywhere
            return R.R250_RCPT_OK
        self._r_relay.inc()
        return R.R550_RELAY_DENIED

    # --- AUTH ------------------------------------------------------------------------------------------

    async def handle_AUTH(self, client: Client, mechanism: str, username: str, password: str) -> R.Reply:
        if self.throttle.blocked(client.ip):
            metrics.AUTH.labels(mechanism, "throttled").inc()
            return R.R454_AUTH_THROTTLED
        try:
            principal = await self.directory.authenticate(username, password, "smtp")
        except Exception as exc:
            metrics.AUTH.labels(mechanism, "unavailable").inc()
            log.warning("authentication unavailable: %s: %s", type(exc).__name__, exc)
            return R.R454_AUTH_TEMP
        return await self._auth_outcome(client, mechanism, username, principal)

    async def handle_SCRAM(
        self, client: Client, exchange: ServerExchange, client_first: bytes, ask: scram_auth.Ask
    ) -> R.Reply:
        """SCRAM-SHA-256[-PLUS] (mailflow.scram_auth). A client-first message that cannot be used raises
        (SaslError: 501), and so does a cancelled challenge (PermFailure), before the throttle counts."""
        mechanism = exchange.mechanism
        if self.throttle.blocked(client.ip):
            metrics.AUTH.labels(mechanism, "throttled").inc()
            return R.R454_AUTH_THROTTLED
        try:
            outcome = await scram_auth.authenticate(exchange, client_first, ask, self.directory, "smtp")
        except AuthzidRefused:  # we let no user act as another
            outcome = scram_auth.Outcome("", error="other-error")
        except (SaslError, ProtocolError):
            raise
        except Exception as exc:
            metrics.AUTH.labels(mechanism, "unavailable").inc()
            log.warning("authentication unavailable: %s: %s", type(exc).__name__, exc)
            return R.R454_AUTH_TEMP
        return await self._auth_outcome(client, mechanism, outcome.user, outcome.principal, outcome.error)

    async def _auth_outcome(
        self, client: Client, mechanism: str, username: str, principal: Principal | None, scram_error: str | None = None
    ) -> R.Reply:
        if principal is None:
            delay = self.throttle.failed(client.ip)
            metrics.AUTH.labels(mechanism, "failed").inc()
            log.info(
                "authentication failed",
                extra={"user": username[:100], "failures": self.throttle.failures(client.ip), "scram": scram_error},
            )
            if delay > 0:
                await asyncio.sleep(delay)
            if scram_error is not None:
                return R.R535_AUTH_FAILED.with_text(f"Authentication credentials invalid (SCRAM e={scram_error})")
            return R.R535_AUTH_FAILED
        client.principal, client.auth_checked = principal, time.monotonic()
        metrics.AUTH.labels(mechanism, "ok").inc()
        log.info("authenticated", extra={"user": principal.address})
        return R.R235_AUTH_OK

    # --- DATA / BDAT LAST ---------------------------------------------------------------------------------

    async def handle_DATA(self, client: Client, tx: Transaction, body: bytes, started: float) -> R.Reply:
        """`body` is the unstuffed message as the client sent it; `started` is when its end arrived."""
        queue_id, trace_id = ids.queue_id(), ids.trace_id()
        principal = client.principal
        if client.submission and principal is not None:
            body = headers.add_missing_id_and_date(
                body, f"<{queue_id}.{secrets.token_hex(4)}@{self.hostname}>", headers.rfc5322_date()
            )
        verdict = await self.authenticate(client, tx, body)
        if verdict is not None:
            if verdict.reply is not None:
                _rejected("data", verdict.reason).inc()
                log.info("refused: sender authentication", extra={"reason": verdict.reason, "from": tx.mail_from, "client": client.ip})
                return verdict.reply
            body = verdict.message
        params = tx.params
        rcpts = tx.rcpts  # as the client gave them; the queue gets tx.queued_rcpts()
        trace = headers.received(
            helo=client.helo or "unknown",
            ip=client.ip,
            hostname=self.hostname,
            protocol=headers.protocol_name(
                client.esmtp, client.tls is not None, principal is not None, params.smtputf8
            ),
            queue_id=queue_id,
            tls=client.tls,
            rcpt=rcpts[0].address if len(rcpts) == 1 else None,
        )
        ours = trace if verdict is None else trace + verdict.header  # A-R under our Received:
        raw = ours + body
        junk = verdict.reason if verdict is not None and verdict.junk else None  # why it goes to Junk
        if self.spam is not None:  # rspamd sees our Received: and Authentication-Results: too
            decision = await self.spam.check(client, tx, raw, queue_id)
            if decision.reply is not None:
                (self._r_spam if decision.reply.code >= 500 else self._r_spam_later).inc()
                return decision.reply
            if decision.add_headers or decision.remove_headers:
                raw = ours + decision.header_block() + headers.remove_fields(body, decision.remove_headers)
            if decision.junk and junk is None:
                junk = "spam"
        fields = dict(
            queue_id=queue_id,
            trace_id=trace_id,
            mail_from=tx.mail_from,
            rcpt_to=tx.queued_rcpts(),
            size=len(raw),
            client=client.info(),
            envid=params.envid,
            ret=params.ret,
            body_8bit=params.body_8bit,
            smtputf8=params.smtputf8,
            requiretls=params.requiretls,
            junk=junk is not None,
            message_id=headers.message_id(body),
        )
        try:
            await self.queue.enqueue(raw, fields)
        except Exception:  # ServiceUnavailable, or unclassified: 451 4.3.0 either way (replies.to_reply)
            self._r_queue.inc()
            raise
        elapsed = time.perf_counter() - started
        metrics.ACCEPT_SECONDS.observe(elapsed)
        metrics.MESSAGE_BYTES.observe(len(raw))
        metrics.ACCEPTED_RECIPIENTS.inc(len(rcpts))
        self._accepted[client.listener].inc()
        self._accepted_bytes[client.listener].inc(len(raw))
        if junk:
            metrics.JUNKED.inc()
        log.info(
            "queued",
            extra={
                "queue_id": queue_id,
                "from": tx.mail_from,
                "rcpts": len(rcpts),
                "size": len(raw),
                "client": client.ip,
                **({"junk": junk} if junk else {}),
            },
        )
        # stamped at the moment the step ended (the PubAck), however late this line runs under load:
        # `mailflow trace` orders the steps by when they began (at - duration)
        ended = datetime.now(UTC) - timedelta(seconds=time.perf_counter() - started - elapsed)
        await self.queue.trace(
            TraceEvent(
                queue_id=queue_id,
                trace_id=trace_id,
                step="ingress",
                at=ended,
                service="smtp-ingress",
                duration_ms=round(elapsed * 1000, 3),
                detail=f"from=<{tx.mail_from}> rcpts={len(rcpts)} size={len(raw)} client={client.ip} "
                f"listener={client.listener}" + (f" user={principal.address}" if principal else ""),
            )
        )
        return R.R250_QUEUED.with_text(f"Ok: queued as {queue_id}")

    async def authenticate(self, client: Client, tx: Transaction, body: bytes) -> Verdict | None:
        """The sender authentication checks' verdict on a message from the MX listener without AUTH;
        None for every other message (submission, AUTH on the MX listener) or with every check off."""
        if self.checks is None or client.listener != "mx" or client.principal is not None:
            return None
        return await self.checks.run(client.ip, client.helo, tx.mail_from, body)


def owns(principal: Principal, address: str) -> bool:
    """The authenticated user may use `address` as envelope sender: one of their addresses or
    aliases, also with a +tag (RFC 5233 subaddress) on their own local part."""
    mine = {a.lower() for a in principal.addresses} | {principal.address.lower()}
    addr = address.lower()
    if addr in mine:
        return True
    local, at, domain = addr.rpartition("@")
    if at and "+" in local:
        return f"{local.split('+', 1)[0]}@{domain}" in mine
    return False


def recipient(rcpt: Address, params: RcptParams) -> Recipient:
    return Recipient(address=rcpt.address, notify=list(params.notify), orcpt=params.orcpt)
