"""ARC (RFC 8617): verify the chain a message arrives with, seal a message Mailflow forwards.

    chain = await verify_chain(message, dns, now)                  # at the MX: -> Arc
    sealed = await seal(message, authres, keys, authserv_id, now, chain)   # when forwarding it on

`verify_chain` follows §5.2 and never raises. `none`: no ARC header fields. `fail`, with the reason
naming the instance and the field: a field without a valid i=, an instance over MAX_INSTANCES, a gap
in 1..N, a field twice in an instance, an incomplete set, the newest seal already saying cv=fail, cv
not none at i=1 or not pass above, the newest ARC-Message-Signature not verifying (or signing ARC-Seal),
any ARC-Seal not verifying over its sets. A key that DNS could not give is a `fail` too (RFC 8617 has
no temperror), its reason saying "DNS" so the caller can tell. Keys, algorithms and RFC 8301's rules
are DKIM's (`mailflow.authn.dkim`): the ARC-Message-Signature is checked like a DKIM-Signature (its i=
an instance, not an identity), the ARC-Seal over the relaxed sets 1..i (§5.1.1.1).

`seal` adds ARC-Authentication-Results, ARC-Message-Signature and ARC-Seal with i=N+1 on top,
RSA-SHA256 with the domain's DKIM RSA key (the same `dkim.Keys` the signer uses, d= and s= as its RSA
signature has them), relaxed/relaxed, h= as DKIM signs it (From over-signed). cv is the chain's result
(none at i=1); with cv=fail the seal covers its own set only, as dkimpy does. It returns the message
unchanged, unsealed, when sealing would add nothing a receiver can use: the newest seal already says
cv=fail, there are MAX_INSTANCES sets already, or the header block is over MAX_HEADER. It raises
ValueError for a `chain` that is not this message's (another N) or an `authres` with line ends.
"""

from __future__ import annotations

import base64

from mailflow.authn import Arc, DnsLookup, together
from mailflow.authn.dkim import (
    MAX_HEADER,
    Bodies,
    Fields,
    Invalid,
    Keys,
    algorithm,
    b64,
    check,
    check_signature,
    domain_name,
    field_name,
    fold_b64,
    hash_body,
    header_data,
    number,
    public_key,
    relaxed_header,
    rsa_sign,
    signature,
    signed_names,
    split,
    tags,
    without_b,
)
from mailflow.contracts.rest import dkim_selector

MAX_INSTANCES = 50  # RFC 8617 §4.2.1
AAR, AMS, AS = b"arc-authentication-results", b"arc-message-signature", b"arc-seal"
NAMES = {AAR: "ARC-Authentication-Results", AMS: "ARC-Message-Signature", AS: "ARC-Seal"}

Sets = dict[int, dict[bytes, tuple[bytes, bytes]]]  # instance -> {AAR|AMS|AS: (name, value)}


class Broken(Exception):
    """The chain fails for this reason; `highest` is the highest valid i= seen."""

    def __init__(self, reason: str, highest: int):
        super().__init__(reason)
        self.highest = highest


def arc_sets(fields: Fields) -> Sets:
    """The ARC header fields by instance, checked for shape (§5.2 steps 1-3), or Broken."""
    sets: Sets = {}
    found = [(field_name(name), name, value) for name, value in fields if field_name(name) in NAMES]
    instances = [_instance(kind, value) for kind, _, value in found]
    highest = max((i for i in instances if i), default=0)
    for (kind, name, value), i in zip(found, instances, strict=True):
        if not i:
            raise Broken(f"{NAMES[kind]} without a valid i= (1..{MAX_INSTANCES})", highest)
        if kind in sets.setdefault(i, {}):
            raise Broken(f"two {NAMES[kind]} with i={i}", highest)
        sets[i][kind] = (name, value)
    for i in range(1, highest + 1):
        if i not in sets:
            raise Broken(f"ARC set i={i} is missing", highest)
        missing = [NAMES[k] for k in NAMES if k not in sets[i]]
        if missing:
            raise Broken(f"ARC set i={i} has no {' and no '.join(missing)}", highest)
    return sets


def _instance(kind: bytes, value: bytes) -> int:
    """i= of an ARC field (0: none valid): a tag of AMS and AS; the start of ARC-Authentication-Results
    ("i=1; id; ...")."""
    try:
        t = tags(value.split(b";", 1)[0] if kind == AAR else value, NAMES[kind])
        i = number(t["i"], "i", 2)
    except (Invalid, KeyError):
        return 0
    return i if 1 <= i <= MAX_INSTANCES else 0


def seal_data(sets: Sets, upto: int, own_only: bool = False) -> bytes:
    """What ARC-Seal i=`upto` signs (§5.1.1.1): the sets 1..upto in order, each AAR, AMS, AS relaxed,
    the last AS with an empty b= and no CRLF; with `own_only` (cv=fail) set `upto` alone."""
    out = []
    for i in range(upto if own_only else 1, upto + 1):
        for kind in (AAR, AMS, AS):
            name, value = sets[i][kind]
            last = i == upto and kind == AS
            out.append(relaxed_header(name, without_b(value) if last else value) + (b"" if last else b"\r\n"))
    return b"".join(out)


async def verify_chain(message: bytes, dns: DnsLookup, now: int, parsed: tuple[Fields, int] | None = None) -> Arc:
    """The chain's result (§5.2); `now` is the Unix time (x= of the ARC-Message-Signature). `parsed` is
    `dkim.split(message)` when the caller has it already."""
    parsed = parsed or split(message)
    if parsed is None:
        return Arc("fail", reason=f"header block over {MAX_HEADER} octets: not verified")
    fields, body_at = parsed
    try:
        sets = arc_sets(fields)
    except Broken as e:
        return Arc("fail", e.highest, str(e))
    n = len(sets)
    if n == 0:
        return Arc("none")
    seals = {}
    try:
        for i in range(n, 0, -1):
            seals[i] = tags(sets[i][AS][1], f"ARC-Seal i={i}")
            cv = seals[i].get("cv", "")
            if i == n and cv == "fail":
                return Arc("fail", n, f"ARC-Seal i={n} says cv=fail: the chain failed before us")
            if cv != ("none" if i == 1 else "pass"):
                return Arc("fail", n, f"ARC-Seal i={i} has cv={cv[:8]}, not {'none' if i == 1 else 'pass'}")
    except Invalid as e:
        return Arc("fail", n, e.reason)
    checks = [_check_ams(sets[n][AMS], fields, Bodies(message, body_at), dns, now, n)]
    checks += [_check_seal(sets, i, seals[i], dns) for i in range(n, 0, -1)]
    for reason in await together(*checks):
        if reason:
            return Arc("fail", n, reason)
    return Arc("pass", n)


async def _check_ams(
    field: tuple[bytes, bytes], fields: Fields, bodies: Bodies, dns: DnsLookup, now: int, i: int
) -> str:
    """ "" if the newest ARC-Message-Signature verifies, else why not."""
    name, value = field
    try:
        sig = signature(
            tags(value, "ARC-Message-Signature"), now, ("i", "a", "b", "bh", "d", "h", "s"), arc=True
        )
        if AS in sig.h:
            raise Invalid("fail", "h= signs ARC-Seal (RFC 8617 §4.1.2)")
        await check_signature(sig, name, value, fields, bodies, dns)
        return ""
    except Invalid as e:
        return f"ARC-Message-Signature i={i}: {e.reason}" + (" (DNS)" if e.result == "temperror" else "")


async def _check_seal(sets: Sets, i: int, t: dict[str, str], dns: DnsLookup) -> str:
    """ "" if ARC-Seal i verifies over sets 1..i, else why not."""
    try:
        missing = [tag for tag in ("a", "b", "cv", "d", "s") if tag not in t]
        if missing or "h" in t:
            raise Invalid(
                "permerror",
                f"missing tag {missing[0]}=" if missing else "h= is not allowed (RFC 8617 §4.1.3)",
            )
        a, d, s = algorithm(t["a"]), domain_name(t["d"], "d"), domain_name(t["s"], "s")
        key = await public_key(dns, s, d, a)
        check(key, b64(t["b"], "b"), seal_data(sets, i))
        return ""
    except Invalid as e:
        return f"ARC-Seal i={i}: {e.reason}" + (" (DNS)" if e.result == "temperror" else "")


def fold_results(authres: str) -> str:
    """One result a line, as our Authentication-Results is written: the ";" between results (never one
    inside a quoted reason) followed by CRLF TAB, so a long list never makes a line over RFC 5322's 998
    octets (the seal covers the field as written; relaxed canonicalization unfolds it)."""
    parts, start, quoted, escaped = [], 0, False, False
    for at, ch in enumerate(authres):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            parts.append(authres[start:at].strip())
            start = at + 1
    parts.append(authres[start:].strip())
    return ";\r\n\t".join(p for p in parts if p)


async def seal(message: bytes, authres: str, keys: Keys, authserv_id: str, now: int, chain: Arc) -> bytes:
    """`message` with ARC set N+1 on top (see the module's docstring). `authres` is what this host
    found, the results part of its Authentication-Results (RFC 8601 §2.2, after "authserv-id;"):
    e.g. "spf=pass smtp.mailfrom=a.test; dkim=pass header.d=a.test; arc=none"; empty says "none".
    `chain` is `verify_chain`'s result for this message; `now` the Unix time. The results are written
    one a line (`fold_results`)."""
    if "\r" in authres or "\n" in authres or "\r" in authserv_id or "\n" in authserv_id:
        raise ValueError("authres and authserv_id are one line each")
    parsed = split(message)
    if parsed is None:
        return message
    fields, body_at = parsed
    n = chain.instances
    if n >= MAX_INSTANCES:
        return message
    try:
        sets = arc_sets(fields)
    except Broken:
        if chain.result != "fail":
            raise ValueError("the chain is not this message's: its ARC sets are malformed") from None
        sets = {}  # sealed as failed, over its own set only
    if chain.result != "fail" and len(sets) != n:
        raise ValueError(f"the chain is not this message's: i={n}, the message has {len(sets)} ARC sets")
    if n in sets and tags(sets[n][AS][1]).get("cv") == "fail":
        return message
    i, cv = n + 1, "none" if n == 0 else ("pass" if chain.result == "pass" else "fail")
    selector = dkim_selector(keys.selector, "rsa")
    aar = f" i={i}; {authserv_id};\r\n\t{fold_results(authres) or 'none'}".encode()
    bh, _ = await hash_body(message, body_at)
    names = signed_names(fields)
    ams = (
        f" i={i}; a=rsa-sha256; c=relaxed/relaxed; d={keys.domain};\r\n"
        f"\ts={selector}; t={now};\r\n"
        f"\th={':'.join(n.decode() for n in names)};\r\n"
        f"\tbh={base64.b64encode(bh).decode()};\r\n\tb="
    ).encode()
    ams += fold_b64(rsa_sign(keys.rsa, header_data(fields, names, ams, b"ARC-Message-Signature")))
    as_ = f" i={i}; a=rsa-sha256; cv={cv}; d={keys.domain};\r\n\ts={selector}; t={now}; b=".encode()
    sets[i] = {
        AAR: (b"ARC-Authentication-Results", aar),
        AMS: (b"ARC-Message-Signature", ams),
        AS: (b"ARC-Seal", as_),
    }
    as_ += fold_b64(rsa_sign(keys.rsa, seal_data(sets, i, own_only=cv == "fail")))
    return (
        b"ARC-Seal:"
        + as_
        + b"\r\nARC-Message-Signature:"
        + ams
        + b"\r\nARC-Authentication-Results:"
        + aar
        + b"\r\n"
        + message
    )
