"""Sieve scripts of one user (database side): list, get, put, activate, delete, rename, and the active
script delivery runs.

Every function takes the user id from the session (or, for delivery, the user's login) and looks scripts
up by (user_id, name): another user's script is simply NotFound. Rules (RFC 5804):
- a name is 1..MAX_NAME_BYTES octets of UTF-8 with no control character (§1.6); otherwise Invalid;
- at most one script is active; activating one deactivates the other; "" deactivates all (§2.8);
- the active script cannot be deleted (Conflict, §2.10: NO (ACTIVE)); renaming onto an existing name is
  Conflict (§2.11.1: NO (ALREADYEXISTS));
- a script larger than max_bytes, or a new one past max_count, is QuotaExceeded (permanent) whose text
  starts with "maxsize:" or "maxscripts:" (§1.3 QUOTA/MAXSIZE and QUOTA/MAXSCRIPTS);
- vacation_due remembers the replies sent, for delivery's vacation action (maintenance drops the
  rows whose days are over).
The store keeps the bytes as uploaded; checking that they parse is ManageSieve's (the Sieve parser).
"""

from __future__ import annotations

import time

from mailflow.errors import Conflict, Invalid, NotFound, QuotaExceeded
from mailflow_mailbox_store import names
from mailflow_mailbox_store.db import Tx

MAX_NAME_BYTES = 255  # RFC 5804 §1.6: servers must allow at least 128 octets


def script_name(name: str) -> str:
    if not name or len(name.encode()) > MAX_NAME_BYTES:
        raise Invalid(f"a script name is 1 to {MAX_NAME_BYTES} octets")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in name):
        raise Invalid("a script name has no control characters")
    return name


def _id(tx: Tx, user_id: int, name: str) -> tuple[int, bool]:
    r = tx.one("SELECT id, active FROM sieve_scripts WHERE user_id = :u AND name = :n", {"u": user_id, "n": name})
    if r is None:
        raise NotFound(f"no script {name}")
    return r[0], bool(r[1])


def list_scripts(tx: Tx, user_id: int) -> list[tuple[str, bool]]:
    rows = tx.all("SELECT name, active FROM sieve_scripts WHERE user_id = :u ORDER BY name", {"u": user_id})
    return [(n, bool(a)) for n, a in rows]


def get_script(tx: Tx, user_id: int, name: str) -> bytes:
    r = tx.one("SELECT script FROM sieve_scripts WHERE user_id = :u AND name = :n", {"u": user_id, "n": name})
    if r is None:
        raise NotFound(f"no script {name}")
    return bytes(r[0])


def have_space(tx: Tx, user_id: int, name: str, size: int, max_bytes: int, max_count: int) -> None:
    """QuotaExceeded unless a script `name` of `size` octets could be stored now (RFC 5804 §2.3)."""
    script_name(name)
    if size > max_bytes:
        raise QuotaExceeded(f"maxsize: a script is at most {max_bytes} octets", permanent=True)
    others = tx.value(
        "SELECT COUNT(*) FROM sieve_scripts WHERE user_id = :u AND name <> :n", {"u": user_id, "n": name}
    )
    if int(others) >= max_count:
        raise QuotaExceeded(f"maxscripts: at most {max_count} scripts", permanent=True)


def put_script(tx: Tx, user_id: int, name: str, script: bytes, max_bytes: int, max_count: int) -> None:
    have_space(tx, user_id, name, len(script), max_bytes, max_count)
    now = int(time.time())
    tx.run(
        "UPDATE sieve_scripts SET script = :s, updated_at = :t WHERE user_id = :u AND name = :n",
        {"s": script, "t": now, "u": user_id, "n": name},
    )
    if tx.rowcount == 0:
        tx.run(
            "INSERT INTO sieve_scripts (user_id, name, script, active, updated_at) VALUES (:u, :n, :s, :a, :t)",
            {"u": user_id, "n": name, "s": script, "a": False, "t": now},
        )


def set_active(tx: Tx, user_id: int, name: str) -> None:
    """Make `name` the active script; "" leaves none active. NotFound for a script that does not exist."""
    target = None if name == "" else _id(tx, user_id, name)[0]
    tx.run("UPDATE sieve_scripts SET active = :f WHERE user_id = :u AND active = :t", {"f": False, "t": True, "u": user_id})
    if target is not None:
        tx.run("UPDATE sieve_scripts SET active = :t WHERE id = :i", {"t": True, "i": target})


def delete_script(tx: Tx, user_id: int, name: str) -> None:
    script_id, active = _id(tx, user_id, name)
    if active:
        raise Conflict(f"script {name} is active")
    tx.run("DELETE FROM sieve_scripts WHERE id = :i", {"i": script_id})


def rename_script(tx: Tx, user_id: int, old: str, new: str) -> None:
    script_id, _ = _id(tx, user_id, old)
    script_name(new)
    if old == new:
        return
    if tx.one("SELECT id FROM sieve_scripts WHERE user_id = :u AND name = :n", {"u": user_id, "n": new}):
        raise Conflict(f"script {new} exists")
    tx.run("UPDATE sieve_scripts SET name = :n WHERE id = :i", {"n": new, "i": script_id})


def active_script(tx: Tx, login: str) -> tuple[str, bytes, list[str], list[tuple[str, bytes]]] | None:
    """The active script of the user with this login, with the names of the user's mailboxes (for the
    Sieve `mailboxexists` test) and, when the script says "include" anywhere, the user's other scripts;
    or None when the user has none active. NotFound for no user."""
    user_id = tx.value("SELECT id FROM users WHERE address = :a", {"a": names.address(login)})
    if user_id is None:
        raise NotFound("no such user")
    r = tx.one(
        "SELECT name, script FROM sieve_scripts WHERE user_id = :u AND active = :t", {"u": user_id, "t": True}
    )
    if r is None:
        return None
    boxes = [n for (n,) in tx.all("SELECT name FROM mailboxes WHERE user_id = :u AND selectable = :t", {"u": user_id, "t": True})]
    others: list[tuple[str, bytes]] = []
    if b"include" in bytes(r[1]):
        rows = tx.all("SELECT name, script FROM sieve_scripts WHERE user_id = :u AND name <> :n", {"u": user_id, "n": r[0]})
        others = [(n, bytes(b)) for n, b in rows]
    return r[0], bytes(r[1]), boxes, others


def vacation_due(tx: Tx, login: str, key: str, days: int, now: int) -> bool:
    """May the vacation reply `key` (a digest of sender and handle) go now? True records that it does,
    for `days` days (RFC 5230 §4.1); False while an earlier one's days are not over."""
    user_id = tx.value("SELECT id FROM users WHERE address = :a", {"a": names.address(login)})
    if user_id is None:
        raise NotFound("no such user")
    if len(key) != 64:
        raise Invalid("a vacation key is a SHA-256 in hex")
    expires = tx.value("SELECT expires_at FROM sieve_vacation WHERE user_id = :u AND vkey = :k", {"u": user_id, "k": key})
    if expires is not None and int(expires) > now:
        return False
    params = {"u": user_id, "k": key, "e": now + max(1, days) * 86_400}
    tx.run("DELETE FROM sieve_vacation WHERE user_id = :u AND vkey = :k", params)
    tx.run("INSERT INTO sieve_vacation (user_id, vkey, expires_at) VALUES (:u, :k, :e)", params)
    return True
