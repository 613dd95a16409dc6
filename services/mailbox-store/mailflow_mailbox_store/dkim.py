"""DKIM key sets (RFC 6376, RFC 8463): made here, kept in dkim_keys, handed to delivery to sign with.

A set is an RSA 2048 and an Ed25519 key under one selector (their DNS selectors "<selector>-rsa" and
"<selector>-ed25519"). It is made "pending": the operator publishes its records first, then activates
it; the set that signed until then becomes "retired" and stays listed (and should stay published, so
mail in flight still verifies) until it is removed. The private keys leave this module only in
`DkimSigningKey` (SecretStr) through the service-token route; listings carry the public parts only.
Errors: NotFound (no such domain or set), Conflict (selector taken, removing the signing set),
Invalid (a selector that is no DNS label) — their texts never carry key material.
"""

from __future__ import annotations

import base64
import re
import time
from datetime import UTC, datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailflow.contracts.rest import DKIM_KINDS, DkimKeyPublic, DkimRecord, DkimSigningKey, dkim_selector
from mailflow.errors import Conflict, Invalid, NotFound
from mailflow_mailbox_store import names
from mailflow_mailbox_store.db import Tx

RSA_BITS = 2048  # RFC 8301 §3.2: at least 1024, 2048 recommended; longer ones outgrow one TXT string anyway
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")  # a DNS label, room for "-ed25519"
_COLUMNS = "d.name, k.selector, k.state, k.created_at, k.activated_at, k.rsa_public, k.ed25519_public"


def selector(value: str) -> str:
    s = value.strip().lower()
    if not _SELECTOR.match(s):
        raise Invalid(f"not a DKIM selector (letters, digits and inner hyphens, at most 40): {value!r}")
    return s


def new_keys() -> dict[str, str]:
    """A fresh set: PKCS#8 PEM private keys and the base64 public keys of the DNS records."""
    r = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    e = ed25519.Ed25519PrivateKey.generate()
    pem = dict(encoding=serialization.Encoding.PEM, format=serialization.PrivateFormat.PKCS8,
               encryption_algorithm=serialization.NoEncryption())  # fmt: skip
    spki = r.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = e.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "rsa_private": r.private_bytes(**pem).decode(),
        "rsa_public": base64.b64encode(spki).decode(),
        "ed25519_private": e.private_bytes(**pem).decode(),
        "ed25519_public": base64.b64encode(raw).decode(),
    }


def _when(ts: int | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _public(row) -> DkimKeyPublic:
    domain, sel, state, created, activated, rsa_public, ed_public = row
    keys = {"rsa": rsa_public, "ed25519": ed_public}
    return DkimKeyPublic(
        domain=domain, selector=sel, state=state, created_at=_when(created), activated_at=_when(activated),
        records=[DkimRecord(selector=dkim_selector(sel, k), algorithm=a, public_key=keys[k]) for k, a in DKIM_KINDS.items()],
    )  # fmt: skip


def _domain_id(tx: Tx, name: str) -> tuple[int, str]:
    d = names.domain(name)
    domain_id = tx.value("SELECT id FROM domains WHERE name = :d", {"d": d})
    if domain_id is None:
        raise NotFound(f"no domain {d}")
    return domain_id, d


def _key(tx: Tx, domain: str, sel: str) -> tuple[int, int, str, str]:
    domain_id, d = _domain_id(tx, domain)
    s = selector(sel)
    row = tx.one("SELECT id, state FROM dkim_keys WHERE domain_id = :d AND selector = :s", {"d": domain_id, "s": s})
    if row is None:
        raise NotFound(f"no DKIM key {s} for {d}")
    return row[0], domain_id, row[1], d


def get(tx: Tx, key_id: int) -> DkimKeyPublic:
    row = tx.one(f"SELECT {_COLUMNS} FROM dkim_keys k JOIN domains d ON d.id = k.domain_id WHERE k.id = :k", {"k": key_id})
    return _public(row)


def list_keys(tx: Tx, domain: str | None) -> list[DkimKeyPublic]:
    where, params = "", {}
    if domain:
        where, params = "WHERE k.domain_id = :d", {"d": _domain_id(tx, domain)[0]}
    rows = tx.all(f"SELECT {_COLUMNS} FROM dkim_keys k JOIN domains d ON d.id = k.domain_id {where} ORDER BY d.name, k.id", params)
    return [_public(r) for r in rows]


def default_selector(tx: Tx, domain_id: int, now: int) -> str:
    """"mf<YYYYMMDD>", or with b, c, ... after it when that is taken (a rotation on the day of a keygen)."""
    base = "mf" + datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")
    taken = {r[0] for r in tx.all("SELECT selector FROM dkim_keys WHERE domain_id = :d", {"d": domain_id})}
    return next(base + suffix for suffix in ("", *"bcdefghijklmnopqrstuvwxyz") if base + suffix not in taken)


def create(tx: Tx, domain: str, sel: str | None, keys: dict[str, str]) -> DkimKeyPublic:
    """A new pending set with these keys (`new_keys()`, made outside the transaction: RSA takes ~100 ms)."""
    domain_id, d = _domain_id(tx, domain)
    now = int(time.time())
    s = selector(sel) if sel else default_selector(tx, domain_id, now)
    if tx.one("SELECT 1 FROM dkim_keys WHERE domain_id = :d AND selector = :s", {"d": domain_id, "s": s}):
        raise Conflict(f"{d} has a DKIM key {s} already")
    key_id = tx.value(
        "INSERT INTO dkim_keys (domain_id, selector, state, rsa_private, rsa_public, ed25519_private,"
        " ed25519_public, created_at) VALUES (:d, :s, 'pending', :rp, :ru, :ep, :eu, :c) RETURNING id",
        {"d": domain_id, "s": s, "rp": keys["rsa_private"], "ru": keys["rsa_public"],
         "ep": keys["ed25519_private"], "eu": keys["ed25519_public"], "c": now},
    )  # fmt: skip
    return get(tx, key_id)


def activate(tx: Tx, domain: str, sel: str) -> DkimKeyPublic:
    """This set signs from now on; the domain's set that signed until now is retired."""
    key_id, domain_id, _, _ = _key(tx, domain, sel)
    tx.run("UPDATE dkim_keys SET state = 'retired' WHERE domain_id = :d AND state = 'active'", {"d": domain_id})
    tx.run("UPDATE dkim_keys SET state = 'active', activated_at = :t WHERE id = :k", {"k": key_id, "t": int(time.time())})
    return get(tx, key_id)


def remove(tx: Tx, domain: str, sel: str, force: bool) -> None:
    key_id, _, state, d = _key(tx, domain, sel)
    if state == "active" and not force:
        raise Conflict(f"{sel} signs {d}'s mail: activate another key first (or force=true: mail leaves unsigned)")
    tx.run("DELETE FROM dkim_keys WHERE id = :k", {"k": key_id})


def signing_key(tx: Tx, domain: str) -> DkimSigningKey | None:
    """The active set of `domain` or of its nearest parent domain that has one (d= then aligns with a
    From in a subdomain, RFC 7489 §3.1.1 relaxed alignment); None if there is none."""
    try:
        labels = names.domain(domain).split(".")
    except Invalid:
        return None
    candidates = [".".join(labels[i:]) for i in range(len(labels) - 1)]  # never a bare TLD
    if not candidates:
        return None
    clause, params = tx.among("d.name", "n", candidates, "text")
    rows = tx.all(
        "SELECT d.name, k.selector, k.rsa_private, k.ed25519_private FROM dkim_keys k JOIN domains d"
        f" ON d.id = k.domain_id WHERE k.state = 'active' AND {clause}",
        params,
    )
    if not rows:
        return None
    name, sel, rsa_pem, ed_pem = max(rows, key=lambda r: len(r[0]))
    return DkimSigningKey(domain=name, selector=sel, rsa_private=rsa_pem, ed25519_private=ed_pem)
