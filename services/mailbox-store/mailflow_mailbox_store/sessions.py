"""Session tokens: what `authenticate` hands imap-pop3, and what every access call must carry.

A token is "<payload>.<mac>" in base64url: payload = JSON [user_id, expires (Unix s), session id,
generation], mac = HMAC-SHA256(key, payload) truncated to 16 bytes. The key is derived from the
session_key secret (MAILFLOW_SESSION_KEY), which every store process shares and nothing else needs:
the service token, which every service holds, cannot mint sessions.

A token proves a login, not that the login still stands: users.generation moves on at every password
change and disable (and a deleted user's id never comes back, see models.py), so every access call
also asks `Generations` whether the token's generation is still the user's. A bad, altered, expired
or revoked token is refused (401); the store never trusts the user id from anywhere else.
The session id is also the `origin` of the MailboxEvents the session causes, so it can skip its echo
(mailflow.store.client.session_origin reads it out of a token).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import orjson

from mailflow.cache import Cache, SingleFlight


@dataclass(frozen=True, slots=True)
class Session:
    user_id: int
    sid: str
    expires: int
    generation: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def derive_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"mailflow mailbox-store session tokens v2", hashlib.sha256).digest()


class Sessions:
    """Signs and checks tokens (signature and expiry only; `Generations` says whether they still stand)."""

    def __init__(self, key: bytes, ttl: int):
        self.key = key
        self.ttl = ttl

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.key, payload, hashlib.sha256).digest()[:16]

    def issue(self, user_id: int, generation: int) -> tuple[str, Session]:
        s = Session(user_id, secrets.token_hex(8), int(time.time()) + self.ttl, generation)
        payload = orjson.dumps([s.user_id, s.expires, s.sid, s.generation])
        return f"{_b64(payload)}.{_b64(self._mac(payload))}", s

    def check(self, token: str) -> Session | None:
        try:
            p, _, m = token.partition(".")
            payload = _unb64(p)
            if not hmac.compare_digest(_unb64(m), self._mac(payload)):
                return None
            user_id, expires, sid, generation = orjson.loads(payload)
        except (ValueError, TypeError):
            return None
        if not all(isinstance(x, int) for x in (user_id, expires, generation)) or expires < time.time():
            return None
        return Session(user_id, str(sid), expires, generation)


# user ids -> {user id: the generation a token must carry, or None (gone or disabled: none may)}
Reader = Callable[[list[int]], Awaitable[dict[int, int | None]]]


class Generations:
    """Each user's current generation, read from the database and trusted for `ttl` seconds.

    Every access call asks, so the answer comes from memory: a dictionary lookup, and one primary-key
    read per active user per `ttl`. This process's own changes (password, disable, delete) replace
    the entry at once (`changed`); another store process's changes reach it when the entry is
    `ttl` old, which is what bounds "a revoked token stops working" with several store processes on
    one PostgreSQL (1 s by default). A read that overlapped a change of this process is used but not
    remembered, so it cannot put back what `changed` just replaced. A failed read raises (the call
    gets 503: can't check is not revoked).
    """

    def __init__(
        self, read: Reader, ttl: float = 1.0, size: int = 100_000, clock: Callable[[], float] = time.monotonic
    ):
        self.read, self.ttl, self.clock = read, ttl, clock
        self._entries: Cache[int, int | None] = Cache(size, clock)
        self._flights: SingleFlight[int, int | None] = SingleFlight()
        self.revision = 0  # moves on at every `changed`: a read begun before one is not remembered

    def remember(self, found: dict[int, int | None], started: float, revision: int) -> None:
        if revision != self.revision:
            return
        ttl = started + self.ttl - self.clock()  # trusted for `ttl` from when the read began
        for user_id, gen in found.items():
            self._entries.put(user_id, gen, ttl)

    def changed(self, user_id: int, generation: int | None) -> None:
        """This process changed the user's credentials (committed): tokens of other generations are
        refused from now on."""
        self.revision += 1
        self._entries.put(user_id, generation, self.ttl)

    async def current(self, user_id: int) -> int | None:
        hit = self._entries.get(user_id, _MISSING)
        if hit is not _MISSING:
            return hit
        return await self._flights.run(user_id, lambda: self._read_one(user_id))

    async def _read_one(self, user_id: int) -> int | None:
        return (await self.current_many([user_id]))[user_id]

    async def current_many(self, user_ids: Iterable[int]) -> dict[int, int | None]:
        started = self.clock()
        out: dict[int, int | None] = {}
        missing = []
        for user_id in dict.fromkeys(user_ids):
            hit = self._entries.get(user_id, _MISSING)
            if hit is _MISSING:
                missing.append(user_id)
            else:
                out[user_id] = hit
        if missing:
            revision = self.revision
            found = await self.read(missing)
            found = {u: found.get(u) for u in missing}
            self.remember(found, started, revision)
            out.update(found)
        return out

    async def valid(self, s: Session) -> bool:
        hit = self._entries.get(s.user_id, _MISSING)  # the common case, without a coroutine more
        if hit is _MISSING:
            hit = await self.current(s.user_id)
        return hit == s.generation


_MISSING = object()  # a generation of None is an answer: the user is gone or disabled
