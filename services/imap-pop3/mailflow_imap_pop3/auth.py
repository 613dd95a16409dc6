"""Logins for IMAP and POP3: throttling per client address, a short cache of verified credentials, SASL PLAIN.

`Authenticator.login` returns a `Principal` or raises `LoginFailed` (wrong user or password: the
client cannot tell which) or `Throttled` (too many failures from that address: refused without asking
the store, so guessing costs the guesser, not us). A store that does not answer raises
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
import base64
import binascii
import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Callable

from mailflow.cache import Cache
from mailflow.connections import client_key as address_key  # the throttling bucket: IPv6 by /64
from mailflow.store.api import Directory, Principal


class LoginFailed(Exception):
    pass


class Throttled(Exception):
    pass


class SaslError(ValueError):
    pass


def decode_plain(b64: bytes) -> tuple[str, str]:
    """RFC 4616 PLAIN: base64("authzid NUL authcid NUL passwd") -> (user, password). SaslError if bad.
    An authzid other than empty or the user itself is refused (no proxy logins)."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SaslError("bad base64") from exc
    parts = raw.split(b"\x00")
    if len(parts) != 3 or not parts[1]:
        raise SaslError("malformed PLAIN response")
    authz, user, password = (p.decode("utf-8", "replace") for p in parts)
    if authz and authz.lower() != user.lower():
        raise SaslError("authorization identity differs from the user")
    return user, password


class LoginThrottle:
    def __init__(
        self,
        free: int = 3,
        max_failures: int = 20,
        window: float = 900.0,
        max_delay: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
    ):
        self.free, self.max_failures, self.window, self.max_delay = free, max_failures, window, max_delay
        self.clock = clock
        self.max_entries = max_entries
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, key: str) -> list[float]:
        times = self._failures.get(key)
        if not times:
            return []
        cutoff = self.clock() - self.window
        while times and times[0] < cutoff:
            times.pop(0)
        if not times:
            del self._failures[key]
        return times

    def check(self, ip: str) -> None:
        """Throttled if this address is over the limit; then nobody from it may log in for a while."""
        if len(self._recent(address_key(ip))) >= self.max_failures:
            raise Throttled(ip)

    def failed(self, ip: str) -> float:
        """Count a failure; returns how long to wait before answering it."""
        key = address_key(ip)
        times = self._recent(key)
        times.append(self.clock())
        self._failures[key] = times
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_entries:
            self._failures.popitem(last=False)
        over = len(times) - self.free
        return 0.0 if over <= 0 else min(self.max_delay, 2.0 ** (over - 1))

    def failures(self, ip: str) -> int:
        return len(self._recent(address_key(ip)))


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
        self.throttle.check(ip)
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
