"""Who is asking: signed session cookies, CSRF tokens, bounded forms, login throttling.

Two kinds of session, kept apart: an admin's (cookie `mf_admin`, Path=/admin) and a user's (`mf_user`),
each signed with a key of its own derived from MAILFLOW_WEB_SESSION_KEY, so one can never stand for the
other. A cookie is "<payload>.<mac>" in base64url: payload = JSON {a: address, t: the store's session
token, n: nonce, e: expiry}. Every request asks the store whether that login still stands
(`Backend.session_expired`: a password change, a disable or a delete ends it at once), and an admin's
also whether the address still has the admin role. Cookies are HttpOnly, SameSite=Strict, and Secure
over https (or with `secure_cookies`).

CSRF: every POST carries `csrf` = HMAC(key, nonce of the session), compared in constant time; a login
form's nonce comes from a `mf_pre` cookie set with the form. A missing or wrong token is a 403. A form
body past `max_request_bytes` is a 413, read no further; more than MAX_FIELDS fields is a 400.
Logins are throttled per client by mailflow.throttle.LoginThrottle, as imap-pop3 throttles LOGIN.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request
from starlette.datastructures import FormData

ADMIN, USER = "admin", "user"
COOKIE = {ADMIN: "mf_admin", USER: "mf_user"}
COOKIE_PATH = {ADMIN: "/admin", USER: "/"}
PRE_COOKIE = "mf_pre"
FLASH_COOKIE = "mf_flash"
MAX_FIELDS = 1000
MAX_COOKIE = 4096


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Login:
    kind: str  # ADMIN | USER
    address: str
    store_token: str
    nonce: str


class Signer:
    """HMAC-SHA256 under a key derived per label, so a value signed for one use is refused by another."""

    def __init__(self, secret: str):
        self.secret = secret.encode()

    def _key(self, label: str) -> bytes:
        return hmac.new(self.secret, b"mailflow-web:" + label.encode(), hashlib.sha256).digest()

    def mac(self, label: str, data: bytes) -> str:
        return _b64(hmac.new(self._key(label), data, hashlib.sha256).digest())

    def sign(self, label: str, value: dict) -> str:
        payload = _b64(json.dumps(value, separators=(",", ":")).encode())
        return f"{payload}.{self.mac(label, payload.encode())}"

    def unsign(self, label: str, cookie: str | None) -> dict | None:
        """The value, or None for a missing, altered or malformed cookie (never raises)."""
        if not cookie or len(cookie) > MAX_COOKIE or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self.mac(label, payload.encode())):
            return None
        try:
            value = json.loads(_unb64(payload))
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def csrf(self, nonce: str) -> str:
        return self.mac("csrf", nonce.encode())

    def csrf_ok(self, nonce: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), self.csrf(nonce).encode())


class Sessions:
    def __init__(self, signer: Signer, hours: float, secure: bool, clock=time.time):
        self.signer, self.ttl, self.secure, self.clock = signer, int(hours * 3600), secure, clock

    def issue(self, kind: str, address: str, store_token: str) -> tuple[str, Login]:
        nonce = secrets.token_urlsafe(18)
        value = {"a": address, "t": store_token, "n": nonce, "e": int(self.clock()) + self.ttl}
        return self.signer.sign(kind, value), Login(kind, address, store_token, nonce)

    def read(self, request: Request, kind: str) -> Login | None:
        v = self.signer.unsign(kind, request.cookies.get(COOKIE[kind]))
        if v is None or not all(isinstance(v.get(k), str) for k in "atn") or not isinstance(v.get("e"), int):
            return None
        if v["e"] <= self.clock():
            return None
        return Login(kind, v["a"], v["t"], v["n"])

    def secure_for(self, request: Request) -> bool:
        return self.secure or request.url.scheme == "https"

    def set_cookie(self, response, request: Request, name: str, value: str, path: str = "/", max_age: int | None = None):
        response.set_cookie(
            name, value, max_age=max_age, path=path, httponly=True, samesite="strict", secure=self.secure_for(request)
        )

    def pre_nonce(self, request: Request) -> str | None:
        """The nonce of the login form's `mf_pre` cookie (None if it has none or a forged one)."""
        v = self.signer.unsign("pre", request.cookies.get(PRE_COOKIE))
        return v.get("n") if v and isinstance(v.get("n"), str) else None

    def new_pre(self) -> tuple[str, str]:
        nonce = secrets.token_urlsafe(18)
        return nonce, self.signer.sign("pre", {"n": nonce})


async def read_form(request: Request, max_bytes: int) -> FormData:
    """An application/x-www-form-urlencoded body, at most `max_bytes` (413) and MAX_FIELDS fields (400)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise HTTPException(413, "the form is too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise HTTPException(413, "the form is too large")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and ctype != "application/x-www-form-urlencoded":
        raise HTTPException(415, "forms are sent as application/x-www-form-urlencoded")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "the form could not be read") from None
    return FormData(pairs)
