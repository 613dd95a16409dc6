"""DKIM (RFC 6376) with RFC 8301's algorithm and key-size rules and Ed25519 (RFC 8463): the one
implementation of its canonicalization, body hash and header data, used by delivery's signer, by
`verify` here and by ARC (`arc.py`).

Signing: `sign_with(message, keys, now)` puts an RSA-SHA256 and an Ed25519-SHA256 signature on top,
relaxed/relaxed (delivery's `Signer` finds the keys). Verifying: `await verify(message, dns, now)`
gives the `Dkim` results, top first, of the first `MAX_VERIFIED` DKIM-Signature fields, the rest
`neutral` ("not verified"). Once a signature of a domain (d=) passes, that domain's other signatures are
not verified and have no result: RFC 6376 §6.1 lets a verifier stop after a success, and every use of
the results (DMARC alignment, Authentication-Results, ARC) asks only whether d= passed. A domain's RSA
signatures are tried before its Ed25519 ones: with OpenSSL an RSA-2048 verification costs a third of an
Ed25519 one, and a dual-signed message (RFC 8463 §3) is settled by either. Nothing raises for bad input;
each signature ends in:

    permerror  the field breaks RFC 6376 §3.5 (a tag missing or twice, v≠1, h= without from, i= outside
               d=, an unknown a= or c=, x= before t= or in the past), its a= is rsa-sha1 (RFC 8301 §3.1:
               not an acceptable algorithm, so not a "fail" of an acceptable signature, RFC 8601 §2.7.1),
               the key is missing (NXDOMAIN, no TXT), revoked (p= empty), several TXT records (undefined,
               §3.6.2.2), malformed, of another k= or h=, or t=s with an i= subdomain
    temperror  the key could not be had (the DnsLookup said temp_fail): the caller answers 4xx
    fail       body hash mismatch, signature mismatch, an RSA key under 1024 bits (RFC 8301 §3.2: such a
               signature is not valid), a body shorter than l=
    pass       verified; with l= the reason says how much of the body was covered (§8.2: whatever
               follows was not signed)
    neutral    not verified: past the first MAX_VERIFIED signatures (the top ones are the newest)

Bad input, decided: the header block is read as octets, never decoded (8-bit and malformed encodings in
signed fields are canonicalized as they are, as the signer saw them); a DKIM-Signature that is not
ASCII is a permerror; NUL octets are octets (in a signed field or the body they are hashed; in the
DKIM-Signature they are not tag-value characters: permerror); a header block over MAX_HEADER octets is
not looked into: one permerror result (smtp-ingress never accepts one). Bare LF line ends count as
CRLF, as they go on the wire.

Bodies are canonicalized in slices of whole lines (`SLICE`) and hashed in a worker thread above
`THREAD_ABOVE` octets; signatures with the same body canonicalization and l= share one hash.

Signing both signatures (measured when the signer was written): 0.37 ms for 4 KiB, 6.6 ms for 1 MiB, a
25 MiB message in ~150 ms with the event loop never waiting longer than ~20 ms. Verifying both
(`python -m tests.bench.measure_dkim_verify`, 7 Dec 2026, this 2-core machine busy with other work at
load average 8-9, so the spread of two runs; keys from a table, as from the resolver's cache): 4 KiB
0.39-0.51 ms; 1 MiB 6-12 ms (plain lines) and 8-32 ms (every line with spaces to canonicalize); 25 MiB
180-510 ms, the event loop's longest pause meanwhile 15-27 ms. dkimpy 1.1.8 verifying the RSA signature
alone: 0.64-0.86 ms, 53-400 ms and 3.4-7.1 s. ARC, 4 KiB: `seal` 0.7-0.9 ms, `verify_chain` of two sets
0.5-0.7 ms. The relaxed body canonicalization was a pair of regular expression substitutions where a
slice had anything to change: 318 ms for 1 MiB with spaces at every line end in the same conditions,
now `bytes.replace` (20 ms).

Why not dkimpy's signer (1.1.8): it signs RSA in pure Python (`pow` without CRT), 7.0 ms for a 4 KiB
message with RSA alone, 64 ms for 1 MiB; its Ed25519 needs PyNaCl, one more runtime dependency; it
canonicalizes the whole body in single regular expression calls, which hold the GIL for a 25 MiB body
at a stretch, and it looks keys up with blocking DNS. dkimpy and OpenDKIM verify what this signs in the
tests, and this verifies what dkimpy signs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from mailflow import mime
from mailflow.authn import Dkim, DkimResult, DnsLookup, together
from mailflow.cache import memo
from mailflow.contracts.rest import DKIM_KINDS, DkimSigningKey, dkim_selector

# RFC 6376 §5.4.1: the fields that SHOULD be signed, where present; From is signed once more than it
# occurs ("over-signed", §8.15), so a second From added on the way breaks the signature.
SIGNED_FIELDS = (
    "from", "reply-to", "subject", "date", "to", "cc", "in-reply-to", "references", "message-id",
    "mime-version", "content-type", "content-transfer-encoding", "content-id", "content-description",
    "resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc", "resent-message-id",
    "list-id", "list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner", "list-archive",
    "list-unsubscribe-post",
)  # fmt: skip
SLICE = 1 << 20  # body octets canonicalized per step (cut at the next line end)
THREAD_ABOVE = 256 * 1024  # bodies larger than this are hashed in a worker thread
MAX_HEADER = (
    1 << 20
)  # a header block longer than this is neither signed nor verified (smtp-ingress never accepts one)
MAX_VERIFIED = 5  # DKIM-Signature fields verified per message, from the top; OpenDKIM's default is 3
MIN_RSA_BITS = 1024  # RFC 8301 §3.2
MAX_RSA_BITS = 8192  # RFC 8301 §3.2 asks for up to 4096; larger keys only cost the verifier

# Only what changes is matched (a lone space is left alone). No pattern here can backtrack over a long run.
_WSP_RUN = re.compile(rb"\t[ \t]*| [ \t]+")  # -> one space (header fields; bodies: _canonical_lines)
_BARE_LF = re.compile(rb"(?<!\r)\n")
_FOLD = re.compile(rb"\r?\n")

Fields = list[tuple[bytes, bytes]]  # (name as written, value with its folding, CRLF between lines)


# --- canonicalization (RFC 6376 §3.4) ------------------------------------------------------------------


def split(message: bytes) -> tuple[Fields, int] | None:
    """The header fields (name, value with its folding, without the line end) and where the body starts
    (after the empty line); None for a header block over MAX_HEADER octets. A line that is neither a
    field nor a continuation is dropped."""
    if message[:1] == b"\n" or message[:2] == b"\r\n":
        return [], message.index(b"\n") + 1
    ends = [
        at for at in (message.find(b"\n\r\n", 0, MAX_HEADER), message.find(b"\n\n", 0, MAX_HEADER)) if at >= 0
    ]
    if ends:
        at = min(ends)
        head, body_at = message[: at + 1], message.index(b"\n", at + 1) + 1
    elif len(message) <= MAX_HEADER:
        head, body_at = message, len(message)
    else:
        return None
    fields: Fields = []
    for line in head.split(b"\n"):
        line = line.removesuffix(b"\r")
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        elif b":" in line:
            name, _, value = line.partition(b":")
            fields.append((name, value))
    return fields, body_at


def field_name(name: bytes) -> bytes:
    """The name as fields are compared (case-insensitive, RFC 5322 §1.2.2)."""
    return name.strip(b" \t").lower()


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """Unfolded, WSP runs one space, trimmed (§3.4.2); each substitution only where the value has
    something for it to change (most fields have neither)."""
    if b"\n" in value:
        value = _FOLD.sub(b"", value)
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return field_name(name) + b":" + value.strip(b" ")


def _header(name: bytes, value: bytes, simple: bool) -> bytes:
    return name + b":" + value if simple else relaxed_header(name, value)  # §3.4.1: simple is as it is


def body_hash(message: bytes, start: int = 0, simple: bool = False, limit: int | None = None) -> bytes:
    """SHA-256 of the canonical body (what follows `start`; relaxed §3.4.4 or simple §3.4.3), of its
    first `limit` octets with l=."""
    return _body_hash(message, start, simple, limit)[0]


def _body_hash(message: bytes, start: int, simple: bool, limit: int | None) -> tuple[bytes, int]:
    """The hash and how many canonical octets it covers, a slice of whole lines at a time. Empty lines
    are held back until a line with content follows, so those at the very end are never hashed; an
    empty body hashes as nothing (relaxed) or as one CRLF (simple). Stops reading at `limit`."""
    h = hashlib.sha256()
    held, n, done = 0, len(message), 0  # held: canonical empty lines not hashed yet; done: octets hashed

    def update(data: bytes) -> None:
        nonlocal done
        if limit is not None:
            data = data[: limit - done]
        h.update(data)
        done += len(data)

    while start < n and (limit is None or done < limit):
        cut = message.find(b"\n", start + SLICE) if start + SLICE < n else -1
        stop = n if cut < 0 else cut + 1
        chunk = _simple_lines(message[start:stop]) if simple else _canonical_lines(message[start:stop])
        if stop == n and not chunk.endswith(b"\r\n"):
            chunk = (
                chunk if simple else chunk.removesuffix(b" ")
            ) + b"\r\n"  # a non-empty body ends with CRLF
        end = _content_end(chunk)
        if end:
            update(b"\r\n" * held)
            update(chunk[:end])
            held = 0
        held += (len(chunk) - end) // 2
        start = stop
    if simple and done == 0:
        update(b"\r\n")
    return h.digest(), done


def _canonical_lines(chunk: bytes) -> bytes:
    """Whole lines, relaxed (§3.4.4 a): WSP runs one space, none at a line end, CRLF line ends. Done with
    `bytes.replace` (C speed, linear; a run of n spaces takes log2(n) passes): a regular expression
    substitution costs 5-7x as much on bodies with a space at each line end (format=flowed, signatures),
    and the `in`/`count` checks skip the work where there is nothing to change."""
    if b"\t" in chunk:
        chunk = chunk.replace(b"\t", b" ")
    while b"  " in chunk:
        chunk = chunk.replace(b"  ", b" ")
    if chunk.count(b"\n") != chunk.count(b"\r\n"):
        chunk = _BARE_LF.sub(b"\r\n", chunk)
    return chunk.replace(b" \r\n", b"\r\n") if b" \r\n" in chunk else chunk


def _simple_lines(chunk: bytes) -> bytes:
    """Whole lines, simple (§3.4.3): as they are, with CRLF line ends."""
    return _BARE_LF.sub(b"\r\n", chunk) if chunk.count(b"\n") != chunk.count(b"\r\n") else chunk


def _content_end(chunk: bytes) -> int:
    """Where the last line with content ends in a canonical chunk (0: it has empty lines only). After the
    last octet that is no CR or LF come "\r\n" line ends and lone CRs, which are content ("x\r\r\n"):
    the last content line ends at the first LF after that octet, or at a later CR CR LF."""
    bare = len(chunk.rstrip(b"\r\n"))
    end = chunk.index(b"\n", bare) + 1 if bare else 0
    lone = chunk.rfind(b"\r\r\n", bare)
    return max(end, lone + 3) if lone >= 0 else end


def header_data(
    fields: Fields,
    names: Iterable[bytes],
    signature: bytes,
    name: bytes = b"DKIM-Signature",
    simple: bool = False,
) -> bytes:
    """What b= signs (§3.7): the fields named in h=, each instance picked from the bottom up (§5.4.2: a
    name with no instance left adds nothing), then the signature field `name: signature` with an empty
    b=, no CRLF."""
    left: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for n, v in fields:
        left.setdefault(field_name(n), []).append((n, v))
    out = []
    for wanted in names:
        instances = left.get(wanted)
        if instances:
            out.append(_header(*instances.pop(), simple) + b"\r\n")
    out.append(_header(name, signature, simple))
    return b"".join(out)


async def hash_body(
    message: bytes, start: int, simple: bool = False, limit: int | None = None
) -> tuple[bytes, int]:
    """`_body_hash` off the event loop when the body is large."""
    size = len(message) - start if limit is None else min(limit, len(message) - start)
    if size > THREAD_ABOVE:
        return await asyncio.to_thread(_body_hash, message, start, simple, limit)
    return _body_hash(message, start, simple, limit)


# --- signing -------------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Keys:
    """A domain's active key set, loaded: d=, the set's selector and the two private keys."""

    domain: str
    selector: str
    rsa: rsa.RSAPrivateKey
    ed25519: ed25519.Ed25519PrivateKey

    def __repr__(self) -> str:
        return f"Keys(d={self.domain}, s={self.selector})"

    @classmethod
    def load(cls, k: DkimSigningKey) -> Keys:
        r = serialization.load_pem_private_key(k.rsa_private.get_secret_value().encode(), None)
        e = serialization.load_pem_private_key(k.ed25519_private.get_secret_value().encode(), None)
        if not isinstance(r, rsa.RSAPrivateKey) or not isinstance(e, ed25519.Ed25519PrivateKey):
            raise ValueError(f"DKIM key set {k.selector} of {k.domain} is not RSA + Ed25519")
        return cls(k.domain, k.selector, r, e)


def from_domain(fields: Fields) -> str | None:
    """The domain of the one From address (RFC 5322 §3.6.2), lower case, IDNA; None if there is not
    exactly one From field with exactly one address."""
    values = [v for n, v in fields if field_name(n) == b"from"]
    if len(values) != 1:
        return None
    addresses = mime.parse_addresses(_FOLD.sub(b"", values[0]).decode("utf-8", "replace"))
    if len(addresses) != 1 or not addresses[0].mailbox or not addresses[0].host:
        return None  # none, several, or a group
    domain = addresses[0].host.strip().rstrip(".").lower()
    try:
        return domain.encode("idna").decode("ascii") if domain else None
    except UnicodeError:
        return None


def signed_names(fields: Fields) -> list[bytes]:
    """h=: each present field of SIGNED_FIELDS as often as it occurs, then "from" once more."""
    present = [field_name(n) for n, _ in fields]
    names = [n for n in present if n.decode("latin-1") in SIGNED_FIELDS]
    return names + [b"from"]


def fold_b64(sig: bytes) -> bytes:
    text = base64.b64encode(sig)
    return b"\r\n\t".join(text[i : i + 72] for i in range(0, len(text), 72))


def rsa_sign(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def signatures(fields: Fields, bh: bytes, keys: Keys, now: int) -> bytes:
    """The two DKIM-Signature fields (RSA first, then Ed25519), CRLF-terminated, to put on top."""
    names = signed_names(fields)
    out = []
    for kind, algorithm in DKIM_KINDS.items():
        value = (
            f" v=1; a={algorithm}; c=relaxed/relaxed; d={keys.domain};\r\n"
            f"\ts={dkim_selector(keys.selector, kind)}; t={now};\r\n"
            f"\th={':'.join(n.decode() for n in names)};\r\n"
            f"\tbh={base64.b64encode(bh).decode()};\r\n\tb="
        ).encode()
        data = header_data(fields, names, value)
        if kind == "rsa":
            sig = rsa_sign(keys.rsa, data)
        else:  # RFC 8463 §3: Ed25519 over the SHA-256 of the data
            sig = keys.ed25519.sign(hashlib.sha256(data).digest())
        out.append(b"DKIM-Signature:" + value + fold_b64(sig) + b"\r\n")
    return b"".join(out)


async def sign_with(message: bytes, keys: Keys, now: int, parsed: tuple[Fields, int] | None = None) -> bytes:
    """`message` with the signatures of `keys` on top (unchanged if its header block is too long).
    `parsed` is `split(message)` when the caller has it already."""
    parsed = parsed or split(message)
    if parsed is None:
        return message
    fields, body_at = parsed
    bh, _ = await hash_body(message, body_at)
    return signatures(fields, bh, keys, now) + message


# --- tag lists, keys and the signature check (shared with ARC) -----------------------------------------


class Invalid(Exception):
    """A signature that ends in `result` (permerror, temperror or fail) for `reason`."""

    def __init__(self, result: DkimResult, reason: str):
        super().__init__(reason)
        self.result, self.reason = result, reason


ALGORITHMS = {"rsa-sha256": "rsa", "ed25519-sha256": "ed25519"}  # a= -> the key type (k=) it needs
_FWS = b" \t\r\n"
_NAME_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
_VALUE_CHARS = bytes(sorted(set(range(0x21, 0x7F)) - {ord(";")} | set(_FWS)))  # VALCHAR, WSP, FWS (§3.2)
# (a value is checked by deleting these octets from it: what is left is outside the grammar; one C call,
# where a set of each value cost a tenth of a verification)
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
_FIELD_CHARS = frozenset(range(0x21, 0x7F)) - {ord(":")}


def tags(value: bytes, what: str = "DKIM-Signature") -> dict[str, str]:
    """A tag=value list (§3.2), values without their surrounding whitespace. permerror for anything
    the grammar does not allow, a tag given twice included."""
    out: dict[str, str] = {}
    pieces = value.split(b";")
    if pieces[-1].strip(_FWS) == b"":
        pieces.pop()  # a trailing ";" is allowed
    for piece in pieces:
        name, eq, val = piece.partition(b"=")
        name = name.strip(_FWS)
        if not eq or not name or not name[:1].isalpha() or name.translate(None, _NAME_CHARS):
            raise Invalid("permerror", f"malformed {what}: {_show(piece)}")
        if val.translate(None, _VALUE_CHARS):
            raise Invalid(
                "permerror", f"malformed {what}: tag {name.decode()} has a character outside its grammar"
            )
        key = name.decode("ascii")
        if key in out:
            raise Invalid("permerror", f"malformed {what}: tag {key} twice")
        out[key] = val.strip(_FWS).decode("ascii")
    return out


def _show(piece: bytes) -> str:
    return repr(piece.strip(_FWS)[:40].decode("ascii", "replace"))


def without_b(value: bytes) -> bytes:
    """The field value with b='s value (and the whitespace around it) deleted (§3.7)."""
    pieces = value.split(b";")
    for i, piece in enumerate(pieces):
        name, eq, _ = piece.partition(b"=")
        if eq and name.strip(_FWS) == b"b":
            pieces[i] = piece[: len(name) + 1]
    return b";".join(pieces)


def b64(text: str, tag: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except ValueError:
        raise Invalid("permerror", f"{tag}= is not base64") from None


def domain_name(text: str, tag: str) -> str:
    """d= or s=: dot-separated labels of letters, digits, - and _, lower case."""
    name = text.lower()
    labels = name.split(".")
    if not 0 < len(name) <= 253 or not all(
        0 < len(label) <= 63 and set(label) <= _LABEL_CHARS for label in labels
    ):
        raise Invalid("permerror", f"{tag}= is not a domain name: {name[:64]!r}")
    return name


def header_names(text: str) -> list[bytes]:
    """h=: field names, lower case."""
    names = [n.strip(" \t\r\n").lower().encode("ascii") for n in text.split(":")]
    if not all(n and set(n) <= _FIELD_CHARS for n in names):
        raise Invalid("permerror", "h= has an empty or malformed field name")
    return names


def number(text: str, tag: str, digits: int) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > digits:
        raise Invalid("permerror", f"{tag}= is not a number of at most {digits} digits")
    return int(text)


def algorithm(text: str) -> str:
    a = text.lower()
    if a == "rsa-sha1":
        raise Invalid("permerror", "a=rsa-sha1 is not accepted (RFC 8301 §3.1)")
    if a not in ALGORITHMS:
        raise Invalid("permerror", f"unknown algorithm a={a[:32]}")
    return a


@dataclass(frozen=True)
class PublicKey:
    kind: str  # "rsa" | "ed25519"
    key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    strict: bool  # t=s: i= must be d= itself, no subdomain


async def public_key(dns: DnsLookup, selector: str, domain: str, a: str) -> PublicKey:
    """The key at `selector._domainkey.domain` (§3.6.2) for algorithm `a`, or Invalid."""
    name = f"{selector}._domainkey.{domain}"
    answer = await dns.query(name, "TXT")
    if answer.status == "temp_fail":
        raise Invalid("temperror", f"key {name}: DNS lookup failed, try later")
    if answer.status != "ok" or not answer.records:
        raise Invalid("permerror", f"no key at {name}")
    if len(answer.records) > 1:
        raise Invalid(
            "permerror", f"{len(answer.records)} TXT records at {name} (RFC 6376 §3.6.2.2: undefined)"
        )
    return parse_key(answer.records[0], name, a)


@memo(1 << 20)  # the same few keys sign most mail: parsed once (~40 us of DER each); 1 MiB of records
def parse_key(record: str, name: str, a: str) -> PublicKey:
    """A key record (§3.6.1) checked against a=: k= must fit, h= (if any) allow sha256, s= allow email.
    Answers are kept by their whole text, name and a= (a refused record is parsed again each time)."""
    try:
        t = tags(record.encode("ascii"), f"key record {name}")
    except UnicodeEncodeError:
        raise Invalid("permerror", f"malformed key record {name}: not ASCII") from None
    if "v" in t and (t["v"] != "DKIM1" or next(iter(t)) != "v"):
        raise Invalid("permerror", f"malformed key record {name}: v= must be DKIM1 and first")
    kind = t.get("k", "rsa").lower()
    if kind not in ("rsa", "ed25519"):
        raise Invalid("permerror", f"key {name}: unknown key type k={kind[:16]}")
    if kind != ALGORITHMS[a]:
        raise Invalid("permerror", f"key {name} is k={kind}, the signature a={a}")
    if "h" in t and "sha256" not in [h.strip() for h in t["h"].split(":")]:
        raise Invalid("permerror", f"key {name} does not allow sha256 (h={t['h'][:32]})")
    if "s" in t and not {"*", "email"} & {s.strip() for s in t["s"].split(":")}:
        raise Invalid("permerror", f"key {name} is not for email (s={t['s'][:32]})")
    if "p" not in t:
        raise Invalid("permerror", f"malformed key record {name}: no p=")
    if not t["p"]:
        raise Invalid("permerror", f"key {name} is revoked (p= empty)")
    raw = b64(t["p"], f"key record {name}: p")
    strict = "s" in [f.strip() for f in t.get("t", "").split(":")]
    if kind == "ed25519":
        if len(raw) != 32:  # RFC 8463 §4: the raw 32-octet key
            raise Invalid("permerror", f"malformed key record {name}: an Ed25519 key is 32 octets")
        return PublicKey(kind, ed25519.Ed25519PublicKey.from_public_bytes(raw), strict)
    try:
        key = serialization.load_der_public_key(raw)  # SubjectPublicKeyInfo, or a bare RSAPublicKey
    except ValueError:
        raise Invalid("permerror", f"malformed key record {name}: p= is no RSA key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise Invalid("permerror", f"malformed key record {name}: p= is no RSA key")
    if key.key_size < MIN_RSA_BITS:
        raise Invalid("fail", f"key {name} has {key.key_size} bits, under {MIN_RSA_BITS} (RFC 8301 §3.2)")
    if key.key_size > MAX_RSA_BITS:
        raise Invalid("permerror", f"key {name} has {key.key_size} bits, over {MAX_RSA_BITS}")
    return PublicKey(kind, key, strict)


def check(key: PublicKey, signature: bytes, data: bytes) -> None:
    """The signature over the header data, or Invalid fail."""
    try:
        if isinstance(key.key, rsa.RSAPublicKey):
            key.key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:  # RFC 8463 §3: Ed25519 over the SHA-256 of the data
            key.key.verify(signature, hashlib.sha256(data).digest())
    except InvalidSignature:
        raise Invalid("fail", "signature does not verify") from None


# --- verifying -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """A DKIM-Signature (or ARC-Message-Signature) whose tags are well-formed (§3.5)."""

    a: str
    d: str
    s: str
    h: list[bytes]
    simple_header: bool
    simple_body: bool
    bh: bytes
    b: bytes
    length: int | None  # l=
    auid: str  # i= (DKIM; "" for ARC, whose i= is the instance)


_CANON = {"simple": True, "relaxed": False}


def signature(
    t: dict[str, str],
    now: int,
    required: tuple[str, ...] = ("v", "a", "b", "bh", "d", "h", "s"),
    arc: bool = False,
) -> Signature:
    """The tags of a signature checked (§3.5, §6.1.1), or Invalid permerror."""
    missing = [tag for tag in required if tag not in t]
    if missing:
        raise Invalid(
            "permerror",
            f"missing tag {'='.join(missing)}="
            if len(missing) == 1
            else f"missing tags {', '.join(missing)}",
        )
    if not arc and t["v"] != "1":
        raise Invalid("permerror", f"v={t['v'][:8]}, not 1")
    a, d, s = algorithm(t["a"]), domain_name(t["d"], "d"), domain_name(t["s"], "s")
    h = header_names(t["h"])
    if b"from" not in h:
        raise Invalid("permerror", "h= does not include from")
    c_header, _, c_body = t.get("c", "simple/simple").lower().partition("/")
    if c_header not in _CANON or (c_body or "simple") not in _CANON:
        raise Invalid("permerror", f"unknown canonicalization c={t['c'][:32]}")
    if "dns/txt" not in [q.strip().lower() for q in t.get("q", "dns/txt").split(":")]:
        raise Invalid("permerror", f"unknown query method q={t['q'][:32]}")
    auid = ""
    if not arc:
        auid = t.get("i", "@" + d)
        i_domain = auid.rpartition("@")[2].lower()
        if "@" not in auid or not (i_domain == d or i_domain.endswith("." + d)):
            raise Invalid("permerror", f"i= is not in d={d}'s domain")
    signed = number(t["t"], "t", 12) if "t" in t else None
    if "x" in t:
        expires = number(t["x"], "x", 12)
        if signed is not None and expires < signed:
            raise Invalid("permerror", "x= is before t=")
        if expires < now:
            raise Invalid("permerror", "signature expired (x=)")
    length = number(t["l"], "l", 76) if "l" in t else None
    return Signature(
        a,
        d,
        s,
        h,
        _CANON[c_header],
        _CANON[c_body or "simple"],
        b64(t["bh"], "bh"),
        b64(t["b"], "b"),
        length,
        auid,
    )


class Bodies:
    """One body hash per (canonicalization, l=) asked for, computed once for all the signatures."""

    def __init__(self, message: bytes, start: int):
        self.message, self.start = message, start
        self._done: dict[tuple[bool, int | None], tuple[bytes, int]] = {}
        self._tasks: dict[tuple[bool, int | None], asyncio.Task[tuple[bytes, int]]] = {}

    async def hash(self, simple: bool, limit: int | None) -> tuple[bytes, int]:
        key = (simple, limit)
        if len(self.message) - self.start <= THREAD_ABOVE:  # here and now: no task, no turn of the event loop
            if key not in self._done:
                self._done[key] = _body_hash(self.message, self.start, simple, limit)
            return self._done[key]
        if key not in self._tasks:  # in a worker thread, shared by the signatures that ask for it
            self._tasks[key] = asyncio.ensure_future(hash_body(self.message, self.start, simple, limit))
        return await self._tasks[key]


async def check_signature(
    sig: Signature, name: bytes, value: bytes, fields: Fields, bodies: Bodies, dns: DnsLookup
) -> str:
    """The checks of §6.1.2-6.1.3 for a well-formed signature: key, body hash, signature. Returns the
    reason of a pass ("" or what l= left unsigned); raises Invalid."""
    key = await public_key(dns, sig.s, sig.d, sig.a)
    if key.strict and sig.auid and sig.auid.rpartition("@")[2].lower() != sig.d:
        raise Invalid("permerror", f"the key has t=s and i= is a subdomain of d={sig.d}")
    bh, covered = await bodies.hash(sig.simple_body, sig.length)
    if sig.length is not None and covered < sig.length:
        raise Invalid("fail", f"body shorter than l={sig.length}")
    if bh != sig.bh:
        raise Invalid("fail", "body hash does not match")
    check(key, sig.b, header_data(fields, sig.h, without_b(value), name, sig.simple_header))
    return (
        f"l={sig.length}: only the first {sig.length} body octets are signed"
        if sig.length is not None
        else ""
    )


async def verify(
    message: bytes,
    dns: DnsLookup,
    now: int,
    limit: int = MAX_VERIFIED,
    parsed: tuple[Fields, int] | None = None,
) -> list[Dkim]:
    """One result per DKIM-Signature field, top first: the first `limit` verified (key lookups at once,
    each body canonicalization hashed once), the others `neutral`. `now` is the Unix time (x=).
    `parsed` is `split(message)` when the caller has it already."""
    parsed = parsed or split(message)
    if parsed is None:
        return [Dkim("permerror", reason=f"header block over {MAX_HEADER} octets: not verified")]
    fields, body_at = parsed
    found = [(n, v) for n, v in fields if field_name(n) == b"dkim-signature"]
    bodies = Bodies(message, body_at)
    tried = [(n, v, _parsed_tags(v)) for n, v in found[:limit]]
    by_domain: dict[object, list[int]] = {}  # d= -> the signatures' places; one group each if d= is unread
    for i, (_, _, t) in enumerate(tried):
        d = t.get("d", "").lower() if isinstance(t, dict) else ""
        by_domain.setdefault(d or i, []).append(i)
    results: dict[int, Dkim] = {}

    async def domain(places: list[int]) -> None:
        for i in sorted(places, key=lambda i: _rsa_last(tried[i][2])):  # stable: top first otherwise
            n, v, t = tried[i]
            results[i] = await _verify_one(n, v, t, fields, bodies, dns, now)
            if results[i].result == "pass":
                return

    await together(*(domain(places) for places in by_domain.values()))
    rest = [
        _result("neutral", _tags_or_none(v), f"not verified: only the first {limit} signatures are")
        for _, v in found[limit:]
    ]
    return [results[i] for i in sorted(results)] + rest


def _parsed_tags(value: bytes) -> dict[str, str] | Invalid:
    try:
        if not value.isascii():
            raise Invalid("permerror", "DKIM-Signature is not ASCII")
        return tags(value)
    except Invalid as e:
        return e


def _rsa_last(t: dict[str, str] | Invalid) -> bool:
    return not isinstance(t, dict) or t.get("a", "").lower() != "rsa-sha256"


async def _verify_one(
    name: bytes, value: bytes, parsed: dict[str, str] | Invalid, fields: Fields, bodies: Bodies, dns: DnsLookup,
    now: int,
) -> Dkim:  # fmt: skip
    if isinstance(parsed, Invalid):
        return _result(parsed.result, {}, parsed.reason)
    t = parsed
    try:
        sig = signature(t, now)
        return _result("pass", t, await check_signature(sig, name, value, fields, bodies, dns))
    except Invalid as e:
        return _result(e.result, t, e.reason)


def _tags_or_none(value: bytes) -> dict[str, str]:
    try:
        return tags(value) if value.isascii() else {}
    except Invalid:
        return {}


def _result(result: DkimResult, t: dict[str, str], reason: str) -> Dkim:
    """A Dkim result naming d=, s=, a= and b= as far as the field's tags (`t`; none when they did not
    parse) have them."""
    return Dkim(
        result,
        t.get("d", "")[:253].lower(),
        t.get("s", "")[:253],
        t.get("a", "")[:32],
        "".join(t.get("b", "").split())[:8],
        reason,
    )
