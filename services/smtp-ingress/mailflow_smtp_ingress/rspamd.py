"""Spam filtering at the end of DATA: the message is scanned by rspamd (mailflow.rspamd) before the 250.

`SpamFilter.check` returns a `Decision`: a reply that refuses the message, or what to do with an
accepted one (header fields to add, into the recipients' Junk folder or not). By action:
  reject                        -> 550 5.7.1 (the message is refused; the client's problem to bounce)
  soft reject, greylist         -> 451 4.7.1 (try later; greylisting is rspamd's, kept in its Redis)
  add header, rewrite subject   -> accepted with `X-Spam: Yes` and rspamd's milter headers, into Junk
  no action                     -> accepted as it is
Not scanned: MX mail when `rspamd_url` is empty; submission unless `rspamd_submission`; a message over
`rspamd_max_bytes`. Failure: rspamd down, slow (`rspamd_timeout`), an error status or a malformed
answer is logged and counted, then the message is accepted without a spam header (`rspamd_fail_open`,
the default: a spam filter that is away must not stop mail) or deferred with 451 4.7.1; it is never
lost either way. Authenticated (submission) mail is never put into Junk: its recipients are elsewhere.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from mailflow.rspamd import Envelope, RspamdClient, RspamdUnavailable
from mailflow_smtp_ingress import metrics
from mailflow_smtp_ingress import replies as R
from mailflow_smtp_ingress.settings import Settings
from mailflow_smtp_ingress.state import Client, Transaction

log = logging.getLogger(__name__)

SPAM_HEADER = ("X-Spam", "Yes")
_OURS = frozenset({"x-spam", "received"})  # never taken from rspamd's milter headers


@dataclass(frozen=True, slots=True)
class Decision:
    reply: R.Reply | None = None  # refuse with this; None: accept
    add_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()
    junk: bool = False

    def header_block(self) -> bytes:
        return "".join(f"{n}: {v}\r\n" for n, v in self.add_headers).encode("utf-8", "replace")


ACCEPT = Decision()


class SpamFilter:
    def __init__(self, settings: Settings, client: RspamdClient | None = None):
        self.settings = settings
        self.client = client or RspamdClient(
            settings.rspamd_url, settings.rspamd_timeout, settings.rspamd_password.get_secret_value()
        )

    def wanted(self, client: Client, size: int) -> bool:
        if client.submission and not self.settings.rspamd_submission:
            return False
        if size > self.settings.rspamd_max_bytes:
            metrics.RSPAMD_CHECKS.labels("too_big").inc()
            return False
        return True

    async def check(self, client: Client, tx: Transaction, raw: bytes, queue_id: str) -> Decision:
        if not self.wanted(client, len(raw)):
            return ACCEPT
        principal = client.principal
        env = Envelope(
            ip=client.ip,
            helo=client.helo,
            mail_from=tx.mail_from,
            rcpts=[r.address for r in tx.rcpts],
            queue_id=queue_id,
            user=principal.address if principal else None,
            mta_name=self.settings.hostname,
        )
        started = time.perf_counter()
        try:
            verdict = await self.client.check(raw, env)
        except RspamdUnavailable as exc:
            metrics.RSPAMD_CHECKS.labels("unavailable").inc()
            fail_open = self.settings.rspamd_fail_open
            log.warning(
                "rspamd unavailable: %s; %s",
                exc,
                "accepted unscanned" if fail_open else "deferred",
                extra={"queue_id": queue_id},
            )
            return ACCEPT if fail_open else Decision(R.R451_SPAM_CHECK_UNAVAILABLE)
        metrics.RSPAMD_SECONDS.observe(time.perf_counter() - started)
        metrics.RSPAMD_CHECKS.labels("scanned").inc()
        metrics.RSPAMD_ACTIONS.labels(verdict.action).inc()
        about = {"queue_id": queue_id, "action": verdict.action, "score": verdict.score, "client": client.ip}
        match verdict.action:
            case "reject" | "soft reject" | "greylist":  # the message's one INFO line: it is not queued
                log.info("refused by rspamd", extra={**about, "from": tx.mail_from, "why": verdict.message})
                return Decision(R.R550_SPAM if verdict.action == "reject" else R.R451_SPAM_TRY_LATER)
            case "add header" | "rewrite subject":
                log.debug("rspamd: spam, into Junk", extra=about)
                extra = tuple((n, v) for n, v in verdict.add_headers if n.lower() not in _OURS)
                return Decision(
                    add_headers=(SPAM_HEADER, *extra),
                    remove_headers=("X-Spam", *verdict.remove_headers),
                    junk=principal is None,
                )
            case _:  # no action
                log.debug("rspamd: not spam", extra=about)
                return Decision(remove_headers=("X-Spam", *verdict.remove_headers))

    async def close(self) -> None:
        await self.client.close()
