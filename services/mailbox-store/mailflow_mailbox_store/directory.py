"""Who an address is: users, aliases, catch-alls and plus-addressing, looked up in one read transaction.

resolve(address):
  1. the address's domain must be local, else "not_local". Locality is a property of the domain and is
     decided from the domain alone (`is_local_domain`): an address in a local domain whose local part
     we cannot take (a quoted local part with a space) is "unknown_user", never "not_local", or one odd
     sender would send the domain's mail to its public MX (delivery caches the verdict per domain);
  2. a user with that address -> that user; an alias -> its targets, expanded (aliases of aliases too,
     at most MAX_DEPTH deep, cycles ignored; a target that is no user or alias is skipped);
  3. "user+tag@domain" (delimiter setting) -> the same for "user@domain";
  4. the domain's catch-all alias "@domain";
  5. nothing: "unknown_user" (so SMTP answers 550 5.1.1). A database failure raises ServiceUnavailable,
     never "unknown_user": can't check is not doesn't exist.
"""

from __future__ import annotations

from mailflow.errors import Invalid
from mailflow.store.api import Resolution
from mailflow_mailbox_store import names
from mailflow_mailbox_store.db import Tx

MAX_DEPTH = 8


def user_row(tx: Tx, address: str) -> tuple[int, str, str, int, bool] | None:
    """(id, address, password_hash, generation, disabled) of a user, by canonical address."""
    return tx.one(
        "SELECT id, address, password_hash, generation, disabled FROM users WHERE address = :a", {"a": address}
    )


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


def _expand(tx: Tx, address: str, out: dict[str, int], seen: set[str], depth: int) -> None:
    if address in seen or depth > MAX_DEPTH:
        return
    seen.add(address)
    row = tx.one("SELECT id FROM users WHERE address = :a", {"a": address})
    if row is not None:
        out.setdefault(address, row[0])
        return
    targets = tx.value("SELECT targets FROM aliases WHERE address = :a", {"a": address})
    if targets:
        for target in targets.split("\n"):
            if target:
                _expand(tx, target, out, seen, depth + 1)


def resolve_ids(tx: Tx, address: str, delimiter: str = "+") -> tuple[Resolution, dict[str, int]]:
    """The Resolution and the user ids behind it (login address -> id)."""
    if not is_local_domain(tx, address.strip().removesuffix(">").rpartition("@")[2]):
        return Resolution(address=address, status="not_local"), {}
    try:
        canon = names.address(address)
    except Invalid:  # ours, but no local part we could ever have given a user or alias
        return Resolution(address=address, status="unknown_user"), {}
    local, dom = names.split(canon)
    found: dict[str, int] = {}
    _expand(tx, canon, found, set(), 0)
    if not found and delimiter and delimiter in local:
        base = local.split(delimiter, 1)[0]
        if base:
            _expand(tx, f"{base}@{dom}", found, set(), 0)
    if not found:
        _expand(tx, f"@{dom}", found, set(), 0)
    if not found:
        return Resolution(address=canon, status="unknown_user"), {}
    return Resolution(address=canon, status="local", users=tuple(found)), found


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
