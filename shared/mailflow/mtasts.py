"""MTA-STS (RFC 8461): the TXT record and the policy file, read and written; which MX a policy allows.

Used by delivery (a recipient domain's policy: `parse_txt`, `parse_policy`, `Policy.allows`) and by
what publishes ours (smtp-ingress's policy endpoint, `mailflow dns records`: `Policy.text`,
`Policy.id`). Pure: no I/O, no clock.

Every parser is linear and bounded, with no regular expression: the text comes from the network.
Bad input raises `PolicyError` with a reason that says what is wrong (its `.result` is the RFC 8460
result type, sts-policy-invalid); a caller treats a domain whose record or policy does not parse as
having no policy (RFC 8461 §3.1, §3.2), and reports it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

Mode = Literal["enforce", "testing", "none"]
MODES: tuple[Mode, ...] = ("enforce", "testing", "none")
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 §3.2: about one year
MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 §3.3: "senders SHOULD impose a limit on the response size" (64 KiB)
MAX_MX = 100  # mx lines of one policy: more is not a mail domain's policy
MAX_ID = 32  # RFC 8461 §3.1: id = 1*32(ALPHA / DIGIT)
WELL_KNOWN = "/.well-known/mta-sts.txt"


class PolicyError(ValueError):
    """A record or policy that does not parse; `.result` is its RFC 8460 result type."""

    result = "sts-policy-invalid"


def _alnum(text: str) -> bool:
    return text.isascii() and text.isalnum()


def parse_txt(records: list[str]) -> str | None:
    """The policy id of the `_mta-sts.<domain>` TXT records (RFC 8461 §3.1), None when none starts
    with "v=STSv1". PolicyError: more than one does, or the one that does is malformed."""
    ours = [r for r in records if r.startswith("v=STSv1") and r[7:8] in ("", ";", " ", "\t")]
    if not ours:
        return None
    if len(ours) > 1:
        raise PolicyError(f"{len(ours)} v=STSv1 TXT records: exactly one is allowed")
    fields = [f.strip(" \t") for f in ours[0].split(";")]
    if fields and fields[-1] == "":
        fields.pop()  # a trailing ";" is allowed
    found = None
    for field in fields[1:]:
        key, eq, value = field.partition("=")
        if not eq or not key or not value:
            raise PolicyError(f"TXT field {field[:40]!r} is not key=value")
        if key == "id":
            if found is not None:
                raise PolicyError("two id= fields")
            if not (_alnum(value) and len(value) <= MAX_ID):
                raise PolicyError(f"id {value[:40]!r}: 1 to 32 letters and digits")
            found = value
        elif not (_alnum(key[0]) and len(key) <= 32 and all(_alnum(c) or c in "_-." for c in key)):
            raise PolicyError(f"TXT field name {key[:40]!r} is malformed")
        # other fields: extensions, ignored (§3.1)
    if found is None:
        raise PolicyError("no id= in the v=STSv1 TXT record")
    return found


def _pattern(text: str) -> str:
    """An mx pattern in the form it is compared in: lower case, no final dot. PolicyError unless it is
    a host name or `*.` and one (§3.2: the wildcard stands for the leftmost label only)."""
    name = text.lower().removesuffix(".")
    labels = name.removeprefix("*.").split(".")
    if not name or len(name) > 253 or not name.isascii() or len(labels) < 2 and name.startswith("*."):
        raise PolicyError(f"mx {text[:80]!r} is not a host name or *.name")
    for label in labels:
        if not 0 < len(label) <= 63 or label[0] == "-" or label[-1] == "-" or not all(c.isalnum() or c in "-_" for c in label):
            raise PolicyError(f"mx {text[:80]!r} is not a host name or *.name")
    return name


@dataclass(frozen=True)
class Policy:
    mode: Mode
    mx: tuple[str, ...]  # patterns, lower case: "mail.example.com", "*.example.net"
    max_age: int  # seconds, at most MAX_AGE_LIMIT

    def allows(self, host: str) -> bool:
        """Does an MX host name match one of the patterns? (RFC 8461 §4.1: "*." matches exactly one
        leftmost label, so *.example.com matches mx.example.com, not example.com or a.b.example.com.)"""
        name = host.lower().removesuffix(".")
        parent = name.partition(".")[2]
        return any(p == name or (p.startswith("*.") and parent and p[2:] == parent) for p in self.mx)

    def text(self) -> str:
        """The policy file (CRLF line ends, §3.2), as we publish it."""
        lines = ["version: STSv1", f"mode: {self.mode}", *(f"mx: {m}" for m in self.mx), f"max_age: {self.max_age}"]
        return "".join(line + "\r\n" for line in lines)

    def id(self) -> str:
        """The TXT record's id for this policy: from its content, so it changes when the policy does."""
        return hashlib.sha256(self.text().encode()).hexdigest()[:20]


def make(mode: str, mx: list[str], max_age: int) -> Policy:
    """A policy from settings; PolicyError names what is wrong."""
    if mode not in MODES:
        raise PolicyError(f"mode {mode!r}: enforce, testing or none")
    if not 0 <= max_age <= MAX_AGE_LIMIT:
        raise PolicyError(f"max_age {max_age}: 0 to {MAX_AGE_LIMIT} seconds")
    patterns = tuple(_pattern(m) for m in mx)
    if mode != "none" and not patterns:
        raise PolicyError(f"mode {mode} needs at least one mx")
    return Policy(mode, patterns, max_age)  # type: ignore[arg-type]


def parse_policy(body: bytes) -> Policy:
    """The policy file (RFC 8461 §3.2): `key: value` lines ended by LF or CRLF; version STSv1, mode
    and max_age once each, mx one or more times (none needed for mode none); unknown keys ignored."""
    if len(body) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy of {len(body)} bytes: at most {MAX_POLICY_BYTES}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policy is not UTF-8 (byte {exc.start})") from None
    values: dict[str, str] = {}
    mx: list[str] = []
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.removesuffix("\r").rstrip(" \t")
        if not line:
            continue
        key, colon, value = line.partition(":")
        value = value.lstrip(" \t")
        if not colon or not key or not value:
            raise PolicyError(f"line {n} is not 'key: value'")
        if not all(_alnum(c) or c in "_-." for c in key):
            raise PolicyError(f"line {n}: malformed key {key[:40]!r}")
        if key == "mx":
            if len(mx) >= MAX_MX:
                raise PolicyError(f"more than {MAX_MX} mx lines")
            mx.append(value)
        elif key in ("version", "mode", "max_age"):
            if key in values:
                raise PolicyError(f"line {n}: {key} given twice")
            values[key] = value
    if values.get("version") != "STSv1":
        raise PolicyError(f"version {values.get('version', '(missing)')[:40]!r}: must be STSv1")
    age = values.get("max_age", "")
    if not (age.isascii() and age.isdigit() and len(age) <= 10):
        raise PolicyError(f"max_age {age[:40] or '(missing)'!r}: a number of seconds, at most 10 digits")
    mode = values.get("mode", "")
    if mode not in MODES:
        raise PolicyError(f"mode {mode[:40] or '(missing)'!r}: enforce, testing or none")
    return make(mode, mx, min(int(age), MAX_AGE_LIMIT))


def published(mode: str, mx: str, max_age: int, hostname: str) -> Policy:
    """The policy Mailflow publishes for every domain of ours, from smtp-ingress's settings
    (MAILFLOW_SMTP_MTA_STS_MODE, _MX: comma- or space-separated patterns, empty: our `hostname`,
    _MAX_AGE). smtp-ingress serves it and `mailflow dns records` prints its TXT record, from this one
    function. PolicyError names what is wrong."""
    return make(mode, mx.replace(",", " ").split() or [hostname], max_age)
