"""The admin operations behind /admin/*: domains, users, aliases, quotas (database side, no HTTP).

Aliases: targets are addresses, in a local domain (users or other aliases) or in any other (forwards,
delivered remotely); at most MAX_TARGETS per alias, and an alias that would lead back to itself (a
loop) or reach more than directory.MAX_FORWARDS external targets is refused (Invalid).

Each function takes a transaction; the writers run in the group-commit writer, so they are atomic.
NotFound / Conflict / Invalid carry the text the admin sees. Deleting a user deletes its mail: the
message rows go and their bodies lose a reference (maintenance removes unreferenced bodies later); its id
is never given again (models.py). Password changes and disables move the user's generation on (sessions.py).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from mailflow.contracts.rest import ROLES, AliasPublic, DomainPublic, UserPublic
from mailflow.errors import Conflict, Invalid, NotFound
from mailflow_mailbox_store import directory, names
from mailflow_mailbox_store.db import Tx
from mailflow_mailbox_store.folders import create_default_mailboxes, drop_mailbox_contents


def _when(ts: int | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _page(offset: int, limit: int) -> dict:
    if offset < 0 or not 1 <= limit <= 1000:
        raise Invalid("offset must be >= 0 and limit 1..1000")
    return {"off": offset, "lim": limit}


# --- domains --------------------------------------------------------------------------------------


def list_domains(tx: Tx, offset: int, limit: int) -> tuple[list[DomainPublic], int]:
    rows = tx.all(
        "SELECT d.name, d.created_at, (SELECT COUNT(*) FROM users u WHERE u.domain_id = d.id) "
        "FROM domains d ORDER BY d.name LIMIT :lim OFFSET :off",
        _page(offset, limit),
    )
    total = tx.value("SELECT COUNT(*) FROM domains")
    return [DomainPublic(name=n, created_at=_when(c), users=u) for n, c, u in rows], total


def create_domain(tx: Tx, name: str) -> DomainPublic:
    d = names.domain(name)
    if tx.one("SELECT 1 FROM domains WHERE name = :n", {"n": d}):
        raise Conflict(f"domain {d} exists")
    now = int(time.time())
    tx.run("INSERT INTO domains (name, created_at) VALUES (:n, :c)", {"n": d, "c": now})
    return DomainPublic(name=d, created_at=_when(now), users=0)


def delete_domain(tx: Tx, name: str, force: bool) -> list[int]:
    """Returns the ids of the users deleted with it."""
    d = names.domain(name)
    row = tx.one("SELECT id FROM domains WHERE name = :n", {"n": d})
    if row is None:
        raise NotFound(f"no domain {d}")
    users = [r[0] for r in tx.all("SELECT address FROM users WHERE domain_id = :d", {"d": row[0]})]
    if users and not force:
        raise Conflict(f"domain {d} still has {len(users)} users (force=true deletes them with their mail)")
    gone = [delete_user(tx, address) for address in users]
    tx.run("DELETE FROM aliases WHERE domain_id = :d", {"d": row[0]})
    tx.run("DELETE FROM dkim_keys WHERE domain_id = :d", {"d": row[0]})
    tx.run("DELETE FROM domains WHERE id = :d", {"d": row[0]})
    return gone


# --- users ------------------------------------------------------------------------------------------

_USER_COLUMNS = "address, quota_bytes, used_bytes, messages, created_at, disabled, role"


def _user(row) -> UserPublic:
    a, q, used, msgs, c, disabled, role = row
    return UserPublic(
        address=a, quota_bytes=q, used_bytes=used, messages=msgs, created_at=_when(c), disabled=bool(disabled),
        role=role,
    )


def list_users(tx: Tx, domain: str | None, offset: int, limit: int) -> tuple[list[UserPublic], int]:
    params = _page(offset, limit)
    where = ""
    if domain:
        params["d"] = names.domain(domain)
        where = "WHERE domain_id = (SELECT id FROM domains WHERE name = :d)"
    rows = tx.all(
        f"SELECT {_USER_COLUMNS} FROM users {where} ORDER BY address LIMIT :lim OFFSET :off", params
    )
    total = tx.value(f"SELECT COUNT(*) FROM users {where}", params)
    return [_user(r) for r in rows], total


def get_user(tx: Tx, address: str) -> UserPublic:
    row = tx.one(f"SELECT {_USER_COLUMNS} FROM users WHERE address = :a", {"a": names.address(address)})
    if row is None:
        raise NotFound(f"no user {address}")
    return _user(row)


def create_user(
    tx: Tx, address: str, password_hash: str, verifier: str | None, quota_bytes: int | None
) -> UserPublic:
    a = names.address(address)
    _, dom = names.split(a)
    if quota_bytes is not None and quota_bytes < 0:
        raise Invalid("quota_bytes must be >= 0")
    domain_id = tx.value("SELECT id FROM domains WHERE name = :d", {"d": dom})
    if domain_id is None:
        raise NotFound(f"no domain {dom}: add it first")
    if tx.one("SELECT 1 FROM users WHERE address = :a", {"a": a}):
        raise Conflict(f"user {a} exists")
    now = int(time.time())
    user_id = tx.value(
        "INSERT INTO users (domain_id, address, password_hash, scram_verifier, quota_bytes, used_bytes,"
        " messages, next_uidvalidity, created_at) VALUES (:d, :a, :h, :s, :q, 0, 0, :v, :c) RETURNING id",
        {"d": domain_id, "a": a, "h": password_hash, "s": verifier, "q": quota_bytes, "v": now, "c": now},
    )
    create_default_mailboxes(tx, user_id)
    return UserPublic(address=a, quota_bytes=quota_bytes, created_at=_when(now))


def set_password(tx: Tx, address: str, password_hash: str, verifier: str) -> tuple[int, int]:
    """A new password: the generation moves on, so every session of the old one is refused.
    Returns (user id, new generation)."""
    row = tx.one(
        "UPDATE users SET password_hash = :h, scram_verifier = :s, generation = generation + 1"
        " WHERE address = :a RETURNING id, generation",
        {"h": password_hash, "s": verifier, "a": names.address(address)},
    )
    if row is None:
        raise NotFound(f"no user {address}")
    _end_sessions(tx, row[0])
    return row[0], row[1]


def _end_sessions(tx: Tx, user_id: int) -> None:
    """What revoked sessions held: the POP3 maildrop lock (its holder can no longer release it)."""
    tx.run("DELETE FROM pop3_locks WHERE user_id = :u", {"u": user_id})


def rehash(tx: Tx, login: str, old_hash: str, new_hash: str) -> None:
    """The same password under current argon2 parameters: no new generation (nothing was revoked).
    Only if the hash is still the one verified, so a password change meanwhile is never undone."""
    tx.run(
        "UPDATE users SET password_hash = :n WHERE address = :a AND password_hash = :o",
        {"n": new_hash, "a": login, "o": old_hash},
    )


def set_verifier(tx: Tx, login: str, password_hash: str, verifier: str) -> None:
    """The SCRAM verifier of the password just verified against `password_hash`: only if that is still
    the user's hash, so a password changed meanwhile never gets the old password's verifier."""
    tx.run(
        "UPDATE users SET scram_verifier = :s WHERE address = :a AND password_hash = :h",
        {"s": verifier, "a": login, "h": password_hash},
    )


def set_disabled(tx: Tx, address: str, disabled: bool) -> tuple[int, int, bool]:
    """Disable (the generation moves on: every session ends, logins are refused; mail still arrives)
    or enable a user. Returns (user id, generation, whether anything changed)."""
    a = names.address(address)
    row = tx.one("SELECT id, generation, disabled FROM users WHERE address = :a", {"a": a})
    if row is None:
        raise NotFound(f"no user {address}")
    user_id, generation, was = row[0], row[1], bool(row[2])
    if was == disabled:
        return user_id, generation, False
    generation += 1 if disabled else 0
    tx.run(
        "UPDATE users SET disabled = :d, generation = :g WHERE id = :u",
        {"d": disabled, "g": generation, "u": user_id},
    )
    if disabled:
        _end_sessions(tx, user_id)
    return user_id, generation, True


def set_quota(tx: Tx, address: str, quota_bytes: int | None) -> None:
    if quota_bytes is not None and quota_bytes < 0:
        raise Invalid("quota_bytes must be >= 0")
    tx.run(
        "UPDATE users SET quota_bytes = :q WHERE address = :a",
        {"q": quota_bytes, "a": names.address(address)},
    )
    if tx.rowcount == 0:
        raise NotFound(f"no user {address}")


def set_role(tx: Tx, address: str, role: str) -> None:
    """ROLES only; the web console reads it at every admin request, so a change takes effect at once."""
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}")
    tx.run("UPDATE users SET role = :r WHERE address = :a", {"r": role, "a": names.address(address)})
    if tx.rowcount == 0:
        raise NotFound(f"no user {address}")


def delete_user(tx: Tx, address: str) -> int:
    """Delete a user and all of its mail. Returns the user id."""
    a = names.address(address)
    user_id = tx.value("SELECT id FROM users WHERE address = :a", {"a": a})
    if user_id is None:
        raise NotFound(f"no user {a}")
    for (mailbox_id,) in tx.all("SELECT id FROM mailboxes WHERE user_id = :u", {"u": user_id}):
        drop_mailbox_contents(tx, mailbox_id)
        tx.run("DELETE FROM expunged WHERE mailbox_id = :m", {"m": mailbox_id})
    p = {"u": user_id}
    for table in ("mailboxes", "subscriptions", "keywords", "delivery_keys", "pop3_locks", "sieve_scripts", "sieve_vacation"):
        tx.run(f"DELETE FROM {table} WHERE user_id = :u", p)
    tx.run("DELETE FROM users WHERE id = :u", p)
    return user_id


# --- aliases ----------------------------------------------------------------------------------------


def list_aliases(tx: Tx, domain: str | None, offset: int, limit: int) -> tuple[list[AliasPublic], int]:
    params = _page(offset, limit)
    where = ""
    if domain:
        params["d"] = names.domain(domain)
        where = "WHERE domain_id = (SELECT id FROM domains WHERE name = :d)"
    rows = tx.all(
        f"SELECT address, targets FROM aliases {where} ORDER BY address LIMIT :lim OFFSET :off", params
    )
    total = tx.value(f"SELECT COUNT(*) FROM aliases {where}", params)
    return [AliasPublic(address=a, targets=[t for t in ts.split("\n") if t]) for a, ts in rows], total


MAX_TARGETS = 100  # per alias; more is a mailing list's job


def create_alias(tx: Tx, address: str, targets: list[str]) -> AliasPublic:
    a = names.alias_address(address)
    dom = a[1:] if a.startswith("@") else names.split(a)[1]
    domain_id = tx.value("SELECT id FROM domains WHERE name = :d", {"d": dom})
    if domain_id is None:
        raise NotFound(f"no domain {dom}: add it first")
    canon = list(dict.fromkeys(names.address(t) for t in targets))
    if not canon:
        raise Invalid("an alias needs at least one target")
    if len(canon) > MAX_TARGETS:
        raise Invalid(f"an alias has at most {MAX_TARGETS} targets")
    if tx.one("SELECT 1 FROM aliases WHERE address = :a", {"a": a}):
        raise Conflict(f"alias {a} exists")
    _check_expansion(tx, a, canon)
    tx.run(
        "INSERT INTO aliases (domain_id, address, targets, created_at) VALUES (:d, :a, :t, :c)",
        {"d": domain_id, "a": a, "t": "\n".join(canon), "c": int(time.time())},
    )
    return AliasPublic(address=a, targets=canon)


def _check_expansion(tx: Tx, alias: str, targets: list[str]) -> None:
    """Refuse a loop (a target leads back to the alias) and a fan-out past directory.MAX_FORWARDS.
    Aliases are only ever added whole, so a loop is always closed by the alias that completes it."""
    out = directory.Expansion()
    for t in targets:
        directory.expand(tx, t, out)
    if alias in out.seen:
        raise Invalid(f"alias loop: {alias} would lead back to itself")
    if out.dropped:
        raise Invalid(f"alias {alias} would reach more than {directory.MAX_FORWARDS} external addresses")


def delete_alias(tx: Tx, address: str) -> None:
    tx.run("DELETE FROM aliases WHERE address = :a", {"a": names.alias_address(address)})
    if tx.rowcount == 0:
        raise NotFound(f"no alias {address}")
