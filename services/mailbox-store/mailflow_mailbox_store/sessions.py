"""Session tokens: what `authenticate` hands imap-pop3, and what every access call must carry.

A token is "<payload>.<mac>" in base64url: payload = JSON [user_id, expires (Unix s), session id],
mac = HMAC-SHA256(key, payload) truncated to 16 bytes. The key is the session_key setting or, by
default, derived from the service token, so every store process accepts the tokens of the others.
A bad, altered or expired token is refused (401); the store never trusts the user id from anywhere else.
The session id is also the `origin` of the MailboxEvents the session causes, so it can skip its echo
(mailflow.store.client.session_origin reads it out of a token).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class Session:
    user_id: int
    sid: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def derive_key(service_token: str) -> bytes:
    return hmac.new(
        service_token.encode(), b"mailflow mailbox-store session tokens v1", hashlib.sha256
    ).digest()


class Sessions:
    def __init__(self, key: bytes, ttl: int):
        self.key = key
        self.ttl = ttl

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.key, payload, hashlib.sha256).digest()[:16]

    def issue(self, user_id: int) -> tuple[str, Session]:
        s = Session(user_id, secrets.token_hex(8), int(time.time()) + self.ttl)
        payload = orjson.dumps([s.user_id, s.expires, s.sid])
        return f"{_b64(payload)}.{_b64(self._mac(payload))}", s

    def check(self, token: str) -> Session | None:
        try:
            p, _, m = token.partition(".")
            payload = _unb64(p)
            if not hmac.compare_digest(_unb64(m), self._mac(payload)):
                return None
            user_id, expires, sid = orjson.loads(payload)
        except (ValueError, TypeError):
            return None
        if not isinstance(user_id, int) or not isinstance(expires, int) or expires < time.time():
            return None
        return Session(user_id, str(sid), expires)
