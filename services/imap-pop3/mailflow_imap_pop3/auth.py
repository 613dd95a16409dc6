"""Logins for IMAP and POP3: the throttle per client (mailflow.throttle, shared with smtp-ingress) and a
short cache of verified credentials. SASL PLAIN is mailflow.sasl's; SCRAM-SHA-256[-PLUS] logins
(`Authenticator.scram`) run mailflow.scram_auth against the store, count in the same throttle, and are
never cached (each proof is good for one exchange only).

`Authenticator.login` (and `.plain`, `.scram`) returns a `Principal` or raises `LoginFailed` (wrong
user or password: the client cannot tell which) or `Throttled` (too many failures from that client:
refused without asking the store, so guessing costs the guesser, not us). `counted` is where IMAP, POP3
and ManageSieve count every outcome and log the refusals; each protocol only words its reply. A store that does not answer raises
`ServiceUnavailable`, which is temporary and no failure of the client's. A failure waits
2^(n - free) seconds (capped) before it is answered: a tarpit that slows guessing down.

The cache keys on HMAC-SHA256(per-process random key, user NUL password), never the password itself;
it only spares a store round trip (and its argon2 check) for the same user logging in again within
`ttl` seconds. The store's hash is untouched. A password change, disable or delete (UserRevoked, see
revoke.py) drops the user's entries at once, and the revocation is remembered for a while, so a login
that the store answered just before it cannot put a stale principal back; if the event was lost, the
periodic sweep drops entries whose tokens the store refuses.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable

from mailflow import scram_auth
from mailflow.cache import Cache
from mailflow.sasl import AuthzidRefused, SaslError, decode_plain
from mailflow.scram import ServerExchange
from mailflow.store.api import Directory, Principal
from mailflow.throttle import LoginThrottle
from mailflow_imap_pop3 import metrics

log = logging.getLogger(__name__)


class LoginFailed(Exception):
    """`scram_error`: the RFC 5802 server-error-value of a failed SCRAM login, for the client."""

    def __init__(self, user: str, scram_error: str | None = None):
        super().__init__(user)
        self.scram_error = scram_error


class Throttled(Exception):
    pass


async def counted(service: str, ip: str, authenticating: Awaitable[Principal]) -> Principal:
    """`authenticating`'s principal, every outcome counted (mailflow_imap_logins_total by service and
    result) and every refusal logged, here for IMAP, POP3 and ManageSieve alike. The exceptions go on to
    the protocol, which words the reply: Throttled, LoginFailed, a SaslError (a message that cannot be
    used: failed; scram_auth.Cancelled, the client gave up: not counted), anything else (the store does
    not answer: unavailable)."""
    try:
        principal = await authenticating
    except Throttled:
        metrics.LOGINS.labels(service, "throttled").inc()
        log.warning("login refused: too many failures", extra={"peer": ip})
        raise
    except LoginFailed as exc:
        metrics.LOGINS.labels(service, "failed").inc()
        log.info("login failed", extra={"user": str(exc)[:100], "peer": ip, "scram": exc.scram_error})
        raise
    except scram_auth.Cancelled:
        raise
    except SaslError:
        metrics.LOGINS.labels(service, "failed").inc()
        raise
    except Exception:
        metrics.LOGINS.labels(service, "unavailable").inc()
        raise
    metrics.LOGINS.labels(service, "ok").inc()
    return principal


class AuthCache:
    """Verified logins by HMAC of (user, password). Dropping a user's entries is a note about the user,
    checked when an entry is read: `revoke` notes the generation a principal needs from now on (so a
    login answered just before cannot put an older one back), `forget` that the store refused one of
    the user's tokens (entries put before it are out). A note outlives what it drops (max(ttl, 60 s))."""

    def __init__(self, ttl: float = 30.0, size: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self._key = os.urandom(32)
        self._entries: Cache[bytes, tuple[Principal, int]] = Cache(size, clock)  # -> (principal, put as n-th)
        # user id -> (the generation needed, None: none will do; forgotten as n-th)
        self._notes: Cache[int, tuple[int | None, int]] = Cache(size, clock)
        self._n = 0  # puts and forgets so far: which came first

    def _digest(self, user: str, password: str) -> bytes:
        return hmac.new(
            self._key, user.lower().encode() + b"\x00" + password.encode(), hashlib.sha256
        ).digest()

    def _live(self, principal: Principal, n: int) -> bool:
        note = self._notes.get(principal.user_id)
        return note is None or (note[0] is not None and principal.generation >= note[0] and n > note[1])

    def _note(self, user_id: int, needed: int | None, forgotten: int) -> None:
        self._notes.put(user_id, (needed, forgotten), max(self.ttl, 60.0))

    def get(self, user: str, password: str) -> Principal | None:
        if self.ttl <= 0:
            return None
        key = self._digest(user, password)
        hit = self._entries.get(key)
        if hit is None:
            return None
        if not self._live(*hit):
            self._entries.pop(key)
            return None
        return hit[0]

    def put(self, user: str, password: str, principal: Principal) -> None:
        if self.ttl <= 0 or self.stale(principal):
            return
        self._n += 1
        self._entries.put(self._digest(user, password), (principal, self._n), self.ttl)

    def forget(self, principal: Principal) -> None:
        """Drop every entry of this principal's user (the store refused its token)."""
        self._n += 1
        self._note(principal.user_id, self._notes.get(principal.user_id, (-1, 0))[0], self._n)

    def revoke(self, user_id: int, generation: int | None) -> None:
        """The store revoked the user's credentials below `generation` (None: all, the user is gone):
        drop those entries, and refuse such principals from now on (a login answered just before)."""
        needed, forgotten = self._notes.get(user_id, (-1, 0))
        if needed is not None and generation is not None:
            needed = max(needed, generation)  # generations only move on: an event that arrives late changes nothing
        self._note(user_id, None if generation is None else needed, forgotten)

    def stale(self, principal: Principal) -> bool:
        """Revoked since the store issued it (as far as we have heard)."""
        needed = self._notes.get(principal.user_id, (-1, 0))[0]  # -1: below every generation
        return needed is None or principal.generation < needed

    def principals(self) -> list[Principal]:
        return [p for _, (p, n) in self._entries.items() if self._live(p, n)]


class Authenticator:
    def __init__(
        self,
        directory: Directory,
        throttle: LoginThrottle,
        cache: AuthCache,
        default_domain: str = "",
        sleep: Callable[[float], object] = asyncio.sleep,
    ):
        self.directory, self.throttle, self.cache = directory, throttle, cache
        self.default_domain = default_domain
        self.sleep = sleep

    def username(self, user: str) -> str:
        user = user.strip()
        if self.default_domain and "@" not in user:
            user = f"{user}@{self.default_domain}"
        return user

    async def login(
        self, user: str, password: str, ip: str, service: str, taken: set[str] | frozenset[str] = frozenset()
    ) -> Principal:
        """A cached principal whose token is in `taken` is not handed out again: the store asks for a
        session of its own (POP3: the maildrop lock belongs to the store session, and two connections
        must never share one)."""
        if self.throttle.blocked(ip):
            raise Throttled(ip)
        user = self.username(user)
        if not user or not password or len(user) > 320 or len(password) > 1024:
            principal = None
        else:
            principal = self.cache.get(user, password)
            if principal is not None and principal.token in taken:
                principal = None
            if principal is None:
                principal = await self.directory.authenticate(user, password, service)
                if principal is not None and self.cache.stale(principal):  # revoked while we asked
                    principal = await self.directory.authenticate(user, password, service)
                if principal is not None and self.cache.stale(principal):
                    principal = None
                if principal is not None:
                    self.cache.put(user, password, principal)
        if principal is None:
            delay = self.throttle.failed(ip)
            if delay:
                await self.sleep(delay)
            raise LoginFailed(user)
        return principal

    async def plain(
        self, response: bytes | str, ip: str, service: str, taken: set[str] | frozenset[str] = frozenset()
    ) -> Principal:
        """`login` with a SASL PLAIN response (RFC 4616); SaslError when it is not one."""
        user, password = decode_plain(response)
        return await self.login(user, password, ip, service, taken)

    async def scram(self, exchange: ServerExchange, client_first: bytes, ask: scram_auth.Ask, ip: str, service: str) -> Principal:
        """One SCRAM login (mailflow.scram_auth): a ScramError for a client-first message that cannot be
        used (the store is not asked), LoginFailed (with the SCRAM error) or Throttled as `login`."""
        if self.throttle.blocked(ip):
            raise Throttled(ip)
        try:
            outcome = await scram_auth.authenticate(
                exchange, client_first, ask, self.directory, service, self.username
            )
        except AuthzidRefused:
            outcome = scram_auth.Outcome("", error="other-error")
        principal = outcome.principal
        if principal is not None and self.cache.stale(principal):  # revoked while we asked
            principal = None
        if principal is None:
            delay = self.throttle.failed(ip)
            if delay:
                await self.sleep(delay)
            raise LoginFailed(outcome.user, outcome.error)
        return principal
