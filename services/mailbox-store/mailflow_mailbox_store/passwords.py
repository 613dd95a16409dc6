"""Password hashes (argon2id) and a short-lived cache of verified logins.

argon2 costs tens of milliseconds of CPU per check on purpose; an IMAP client that logs in a hundred
times a minute would spend the whole machine on it. So a successful check is remembered as
HMAC-SHA256(per-process random key, password) next to the stored hash, for `cache_ttl` seconds: the
next login with the same password and the same stored hash is answered from memory. A password change
changes the stored hash, so the entry stops matching at once (in every store process). The cache
holds no password and nothing that outlives the process. Failed checks are never cached.
Unknown users still cost one argon2 check against a dummy hash, so timing does not tell them apart.

Beside the hash each user has a SCRAM-SHA-256 verifier (mailflow.scram.Verifier, `scram_iterations`
rounds of PBKDF2), made wherever the store learns the password; `scram_secret` (shared by every store
process) makes the stable fake salt answered for a user who has none, so SCRAM's first step does not
tell who exists.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from mailflow import scram
from mailflow.cache import Cache


class Passwords:
    def __init__(
        self,
        time_cost: int = 3,
        memory_kib: int = 65_536,
        parallelism: int = 4,
        cache_ttl: float = 300.0,
        cache_size: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        scram_iterations: int = scram.MIN_ITERATIONS,
        scram_secret: bytes | None = None,
    ):
        if scram_iterations < scram.MIN_ITERATIONS:
            raise ValueError(f"SCRAM needs at least {scram.MIN_ITERATIONS} iterations (RFC 7677 §4)")
        self.scram_iterations = scram_iterations
        self.scram_secret = scram_secret or secrets.token_bytes(32)
        self.hasher = argon2.PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        self.cache_ttl = cache_ttl
        self._key = secrets.token_bytes(32)
        self._cache: Cache[str, tuple[str, bytes]] = Cache(cache_size, clock)  # login -> (stored hash, mac)
        self._lock = threading.Lock()  # argon2 runs in threads
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def hash_both(self, password: str) -> tuple[str, str]:
        """(argon2id hash, SCRAM verifier) of a new password. Blocking: call it from a thread."""
        return self.hasher.hash(password), self.verifier(password)

    def verifier(self, password: str) -> str:
        return scram.Verifier.make(password, self.scram_iterations).encode()

    def verifier_current(self, stored: str | None) -> bool:
        """Is this stored verifier usable and made with the current parameters?"""
        if stored is None:
            return False
        try:
            return scram.Verifier.decode(stored).iterations == self.scram_iterations
        except ValueError:
            return False

    def scram_parameters(self, login: str, stored: str | None) -> tuple[bytes, int]:
        """(salt, iterations) for SCRAM's server-first message: the user's, or a stable fake one."""
        if stored is not None:
            try:
                v = scram.Verifier.decode(stored)
                return v.salt, v.iterations
            except ValueError:
                pass
        return scram.fake_salt(self.scram_secret, login), self.scram_iterations

    def mac(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def cached(self, login: str, stored_hash: str, password: str) -> bool:
        """True if this exact password was verified against this exact hash a moment ago."""
        with self._lock:
            hit = self._cache.get(login)
        return hit is not None and hit[0] == stored_hash and hmac.compare_digest(hit[1], self.mac(password))

    def verify(self, login: str, stored_hash: str | None, password: str) -> tuple[bool, str | None]:
        """(ok, new_hash): new_hash is set when the stored hash should be upgraded to current parameters.
        Blocking (argon2): call it from a thread."""
        if stored_hash is None:
            if self._dummy is None:
                self._dummy = self.hasher.hash(secrets.token_hex(16))
            try:
                self.hasher.verify(self._dummy, password)
            except (VerificationError, InvalidHashError):
                pass
            return False, None
        try:
            self.hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False, None
        new_hash = None
        if self.hasher.check_needs_rehash(stored_hash):
            new_hash = self.hasher.hash(password)
        self.remember(login, new_hash or stored_hash, password)
        return True, new_hash

    def remember(self, login: str, stored_hash: str, password: str) -> None:
        entry = (stored_hash, self.mac(password))
        with self._lock:
            self._cache.put(login, entry, self.cache_ttl)

    def forget(self, login: str) -> None:
        with self._lock:
            self._cache.pop(login, None)
