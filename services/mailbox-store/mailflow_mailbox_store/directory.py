"""Who an address is: users, aliases, catch-alls and plus-addressing, looked up in one read transaction.

resolve(address):
  1. the address's domain must be local, else "not_local". Locality is a property of the domain and is
     decided from the domain alone (`is_local_domain`): an address in a local domain whose local part
     we cannot take (a quoted local part with a space) is "unknown_user", never "not_local", or one odd
     sender would send the domain's mail to its public MX (delivery caches the verdict per domain);
  2. a user with that address -> that user; an alias -> its targets, expanded (aliases of aliases too,
     at most MAX_DEPTH deep, cycles ignored; a target in a local domain that is no user or alias is
     skipped; a target in another domain is a forward, at most MAX_FORWARDS of them, the rest dropped
     with a warning: admin.create_alias refuses an alias that reaches more);
  3. "user+tag@domain" (delimiter setting) -> the same for "user@domain";
  4. the domain's catch-all alias "@domain";
  5. nothing: "unknown_user" (so SMTP answers 550 5.1.1). A database failure raises ServiceUnavailable,
     never "unknown_user": can't check is not doesn't exist.
"local" means local users, forwards or both: `Resolution.users` and `Resolution.forward`. The store
delivers only to the users; smtp-ingress queues each forward as a recipient of its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mailflow.errors import Invalid
from mailflow.store.api import QuotaUse, Resolution
from mailflow_mailbox_store import names
from mailflow_mailbox_store.db import Tx

log = logging.getLogger(__name__)

MAX_DEPTH = 8
MAX_FORWARDS = 100  # external targets one address may reach (a copy and a remote delivery each)


def user_row(tx: Tx, address: str) -> tuple[int, str, str, int, bool, str | None] | None:
    """(id, address, password_hash, generation, disabled, scram_verifier) of a user, by canonical address."""
    return tx.one(
        "SELECT id, address, password_hash, generation, disabled, scram_verifier FROM users WHERE address = :a",
        {"a": address},
    )


def quota_use(tx: Tx, user_id: int) -> QuotaUse:
    """The user's kept totals (every change of a message updates them in its own transaction)."""
    used, count, limit = tx.one("SELECT used_bytes, messages, quota_bytes FROM users WHERE id = :u", {"u": user_id})
    return QuotaUse(used_bytes=int(used), messages=int(count), limit_bytes=None if limit is None else int(limit))


def generations(tx: Tx, user_ids: list[int]) -> dict[int, int | None]:
    """The generation a session token of each user must carry; None for a disabled user (absent: gone)."""
    out: dict[int, int | None] = {}
    for i in range(0, len(user_ids), 500):
        clause, params = tx.among("id", "u", user_ids[i : i + 500], "bigint")
        for user_id, generation, disabled in tx.all(
            f"SELECT id, generation, disabled FROM users WHERE {clause}", params
        ):
            out[user_id] = None if disabled else generation
    return out


def is_local_domain(tx: Tx, name: str) -> bool:
    """Is mail for this domain ours? False for anything that is no domain name (we could never have it)."""
    try:
        d = names.domain(name)
    except Invalid:
        return False
    return tx.one("SELECT 1 FROM domains WHERE name = :d", {"d": d}) is not None


@dataclass
class Expansion:
    """What an address leads to: local users (login -> id) and external targets, each once, in order."""

    users: dict[str, int] = field(default_factory=dict)
    forward: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    dropped: int = 0  # external targets past MAX_FORWARDS
    local_domains: dict[str, bool] = field(default_factory=dict)

    def is_local(self, tx: Tx, domain: str) -> bool:
        hit = self.local_domains.get(domain)
        if hit is None:
            hit = self.local_domains[domain] = is_local_domain(tx, domain)
        return hit

    def __bool__(self) -> bool:
        return bool(self.users or self.forward)


def expand(tx: Tx, address: str, out: Expansion, depth: int = 0) -> None:
    """Follow `address` through aliases into `out` (canonical addresses; cycles and depth bounded)."""
    if address in out.seen or depth > MAX_DEPTH:
        return
    out.seen.add(address)
    local, _, domain = address.rpartition("@")
    if local and not out.is_local(tx, domain):
        if len(out.forward) < MAX_FORWARDS:
            out.forward.append(address)
        else:
            out.dropped += 1
            log.warning("alias expansion past %d external targets: %s dropped", MAX_FORWARDS, address)
        return
    row = tx.one("SELECT id FROM users WHERE address = :a", {"a": address})
    if row is not None:
        out.users.setdefault(address, row[0])
        return
    targets = tx.value("SELECT targets FROM aliases WHERE address = :a", {"a": address})
    if targets:
        for target in targets.split("\n"):
            if target:
                expand(tx, target, out, depth + 1)


def resolve_ids(tx: Tx, address: str, delimiter: str = "+") -> tuple[Resolution, dict[str, int]]:
    """The Resolution and the user ids behind it (login address -> id)."""
    if not is_local_domain(tx, address.strip().removesuffix(">").rpartition("@")[2]):
        return Resolution(address=address, status="not_local"), {}
    try:
        canon = names.address(address)
    except Invalid:  # ours, but no local part we could ever have given a user or alias
        return Resolution(address=address, status="unknown_user"), {}
    local, dom = names.split(canon)
    found = Expansion(local_domains={dom: True})
    expand(tx, canon, found)
    if not found and delimiter and delimiter in local:
        base = local.split(delimiter, 1)[0]
        if base:
            expand(tx, f"{base}@{dom}", found)
    if not found:
        expand(tx, f"@{dom}", found)
    if not found:
        return Resolution(address=canon, status="unknown_user"), {}
    res = Resolution(address=canon, status="local", users=tuple(found.users), forward=tuple(found.forward))
    return res, found.users


def resolve(tx: Tx, address: str, delimiter: str = "+") -> Resolution:
    return resolve_ids(tx, address, delimiter)[0]


def addresses_of(tx: Tx, user_id: int, login: str) -> tuple[str, ...]:
    """The user's own address and every alias that leads only to this user (what it may send as)."""
    out = [login]
    rows = tx.all("SELECT address, targets FROM aliases WHERE targets LIKE :t", {"t": f"%{login}%"})
    for alias, targets in rows:
        if alias.startswith("@"):
            continue
        if [t for t in targets.split("\n") if t] == [login]:
            out.append(alias)
    return tuple(out)
