"""DKIM signing (RFC 6376) of mail that leaves for another domain: RSA-SHA256 and Ed25519-SHA256
(RFC 8463) signatures together, relaxed/relaxed, d= the From domain or the parent domain whose key
the store gives (DMARC relaxed alignment, RFC 7489 §3.1.1). The rules (canonicalization, body hash,
the signatures) are `mailflow.authn.dkim`, which verifies with the same code; this module finds the keys.

`Signer.sign(data)` returns the message with two DKIM-Signature fields on top, or the message as it
was when there is nothing to sign with: no single From address, or neither its domain nor a parent of
it has an active key set in mailbox-store. It raises `KeysUnavailable` when the store cannot be asked
(the caller defers: sending unsigned mail that should be signed could get it rejected by DMARC). The
answers are cached per From domain for `ttl` seconds, so a rotation reaches every delivery process
within that time. Private keys live in cryptography key objects and SecretStr; no log line, repr or
error here carries them. What signing costs, and why not dkimpy's signer: `mailflow.authn.dkim`.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from mailflow.authn.dkim import Keys, from_domain, sign_with, split
from mailflow.cache import Cache, SingleFlight
from mailflow.contracts.rest import DkimSigningKey

log = logging.getLogger(__name__)


class KeysUnavailable(Exception):
    """The store could not say which key signs this domain: try later."""


class DkimKeys(Protocol):
    async def dkim_signing_key(self, domain: str) -> DkimSigningKey | None: ...


class Signer:
    def __init__(self, store: DkimKeys, ttl: float = 60.0, size: int = 10_000, clock=time.monotonic):
        self.store, self.ttl = store, ttl
        self.keys: Cache[str, Keys | None] = Cache(size, clock)  # From domain -> its key set (or none)
        self._flights: SingleFlight[str, Keys | None] = SingleFlight()

    async def keys_for(self, domain: str) -> Keys | None:
        hit = self.keys.get(domain, False)
        if hit is not False:
            return hit
        return await self._flights.run(domain, lambda: self._ask(domain))

    async def _ask(self, domain: str) -> Keys | None:
        try:
            found = await self.store.dkim_signing_key(domain)
            keys = None if found is None else Keys.load(found)
        except Exception as exc:
            raise KeysUnavailable(f"DKIM key of {domain}: {type(exc).__name__}") from exc
        self.keys.put(domain, keys, self.ttl)
        return keys

    async def sign(self, message: bytes) -> tuple[bytes, Keys | None]:
        """The message signed by the key set of its From domain, and that set (None: left unsigned)."""
        parsed = split(message)
        domain = from_domain(parsed[0]) if parsed else None
        if domain is None:
            return message, None
        keys = await self.keys_for(domain)
        if keys is None:
            return message, None
        return await sign_with(message, keys, int(time.time()), parsed), keys
