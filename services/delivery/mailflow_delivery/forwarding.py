"""Forwarded copies: the jobs of an alias's targets in other domains (`job.rcpt.forwarded_for` set by
smtp-ingress from the store's answer) and of Sieve redirects (set by sieve.py to the user whose script
redirected); the queue keeps it for every retry.

Such a copy is delivered like any remote recipient (its own MX, result, retries and DSN), with two
differences made here:
  - loops: a copy whose header has more than MAX_HOPS Received: fields is bounced 5.4.6 (RFC 5321
    §6.3: two servers whose aliases point at each other would pass it back and forth forever);
  - ARC (RFC 8617, `mailflow.authn.arc.seal`): the copy is sealed with the alias domain's DKIM key set
    (the signer's key cache, from the store), so the target can trust what our smtp-ingress found
    although SPF (and perhaps DKIM) no longer pass there. The ARC-Authentication-Results carry the
    results of our Authentication-Results: (the one with our authserv-id, the hostname: smtp-ingress
    removed any other that claimed it); none there: "none". cv= is our A-R's arc= verdict on the chain
    the message came with; a message without ARC fields has none (cv=none, i=1); one with ARC fields
    and no verdict of ours is sent unsealed (cv= would be a guess), as is a copy whose alias domain has
    no key set, or whose chain and verdict disagree (a WARNING). The store cannot say which key:
    `KeysUnavailable`, the caller defers 4.3.0 (as for DKIM signing).
The envelope sender stays the original MAIL FROM, so a bounce of the target's MX reaches the original
sender, as our own DSN for a refused copy does. SPF at the target then checks our address against the
sender's domain and fails: SRS (rewriting the sender through our domain) is the classic fix and is not
done; ARC is the answer this module gives.
"""

from __future__ import annotations

import logging
import time

from mailflow.authn import Arc, arc
from mailflow.authn.dkim import Fields, split
from mailflow.contracts.messages import DeliveryJob
from mailflow_delivery import metrics
from mailflow_delivery.dkim import Signer

log = logging.getLogger(__name__)

MAX_HOPS = 100  # RFC 5321 §6.3: a threshold of "at least 100 Received entries"


class LoopDetected(Exception):
    """The copy went round too often: bounce it (5.4.6)."""


def _named(fields: Fields, *names: bytes) -> list[bytes]:
    return [value for name, value in fields if name.strip(b" \t").lower() in names]


def received_count(fields: Fields) -> int:
    return len(_named(fields, b"received"))


def our_results(fields: Fields, authserv_id: str) -> str:
    """The results part of the topmost Authentication-Results: with our authserv-id, unfolded on one
    line ("spf=pass smtp.mailfrom=a.test; arc=none"); "" when there is none."""
    for value in _named(fields, b"authentication-results"):
        text = " ".join(value.decode("ascii", "replace").split())  # unfolded: no CR or LF is left
        ident, sep, results = text.partition(";")
        if sep and ident.split(" ")[0].lower() == authserv_id.lower():  # "id" or "id version"
            return results.strip()
    return ""


def chain_of(fields: Fields, results: str) -> Arc | None:
    """The chain the message came with, as our smtp-ingress judged it (the arc= result in `results`),
    with as many instances as it has ARC-Seals; none without ARC fields; None when it has some and no
    verdict of ours."""
    verdict = _arc_verdict(results)
    if verdict in ("none", "pass", "fail"):
        return Arc(verdict, len(_named(fields, arc.AS)))
    return None if _named(fields, *arc.NAMES) else Arc("none")


def _arc_verdict(results: str) -> str:
    """"spf=pass smtp.mailfrom=a.test; arc=pass (i=1)" -> "pass"; "" without an arc= result."""
    for result in results.split(";"):
        method, _, rest = result.strip().partition("=")
        if method.strip().lower() == "arc":
            return rest.split(" ")[0].split("(")[0].lower()
    return ""


def alias_domain(job: DeliveryJob) -> str:
    return (job.rcpt.forwarded_for or "").rpartition("@")[2].lower()


def transaction_key(job: DeliveryJob) -> tuple[str, str]:
    """Remote jobs share one SMTP transaction per message, and forwarded copies per alias domain too
    (each is sealed with that domain's key; a copy for a recipient named by the client is not)."""
    return job.queue_id, alias_domain(job)


class Forwarder:
    def __init__(self, signer: Signer | None, authserv_id: str):
        self.signer, self.authserv_id = signer, authserv_id

    async def prepare(self, job: DeliveryJob, message: bytes) -> bytes:
        """The forwarded copy as it leaves. Raises LoopDetected, or KeysUnavailable (try later)."""
        parsed = split(message)
        if parsed is None:  # a header block over authn.dkim.MAX_HEADER: smtp-ingress never accepts one
            return message
        fields = parsed[0]
        if received_count(fields) > MAX_HOPS:
            raise LoopDetected(f"more than {MAX_HOPS} Received: fields")
        sealed = await self.seal(job, message, fields)
        metrics.ARC.labels("sealed" if sealed is not message else "unsealed").inc()
        return sealed

    async def seal(self, job: DeliveryJob, message: bytes, fields: Fields) -> bytes:
        """The ARC-sealed copy, or `message` itself when it is not sealed (see the module docstring)."""
        keys = await self.signer.keys_for(alias_domain(job)) if self.signer else None  # KeysUnavailable
        results = our_results(fields, self.authserv_id)
        chain = chain_of(fields, results)
        if keys is None or chain is None:
            return message
        try:
            return await arc.seal(message, results, keys, self.authserv_id, int(time.time()), chain)
        except ValueError as exc:  # our verdict and the message's ARC fields disagree
            log.warning("forwarded copy not ARC-sealed: %s", exc, extra={"queue_id": job.queue_id})
            return message
