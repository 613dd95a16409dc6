"""IMAP SEARCH criteria as a small tree the store can turn into SQL.

The IMAP parser builds it; sequence numbers, `*`, RECENT/NEW/OLD and `$` are resolved by the session
into `Uids` before it reaches the store. Every key serialises to a JSON-able dict (`to_obj`) and back
(`from_obj`), which raises `ValueError` for anything unknown, so a malformed request is a 422, never a
silent match-all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Literal


@dataclass(frozen=True)
class All:
    pass


@dataclass(frozen=True)
class And:
    keys: tuple[SearchKey, ...]


@dataclass(frozen=True)
class Or:
    a: SearchKey
    b: SearchKey


@dataclass(frozen=True)
class Not:
    key: SearchKey


@dataclass(frozen=True)
class Uids:
    ranges: tuple[tuple[int, int], ...]  # inclusive (low, high), low <= high


@dataclass(frozen=True)
class Flag:
    flag: str  # "\\Seen" or a keyword
    present: bool = True


@dataclass(frozen=True)
class Header:
    field: str  # lower case, e.g. "from", "subject", "x-spam"
    value: str  # case-insensitive substring; "" matches any message that has the field


@dataclass(frozen=True)
class Text:
    where: Literal["body", "text"]  # BODY: the body only; TEXT: header and body
    value: str


@dataclass(frozen=True)
class Date:
    which: Literal["internal", "sent"]  # BEFORE/ON/SINCE vs SENTBEFORE/SENTON/SENTSINCE
    op: Literal["before", "on", "since"]
    day: date


@dataclass(frozen=True)
class Size:
    op: Literal["larger", "smaller"]
    n: int


@dataclass(frozen=True)
class ModSeq:
    n: int  # RFC 7162: messages with modseq >= n


SearchKey = All | And | Or | Not | Uids | Flag | Header | Text | Date | Size | ModSeq


def leaves(k: SearchKey) -> Iterator[SearchKey]:
    """The criteria under And, Or and Not: what a reader checks to know which data a search needs."""
    match k:
        case And(keys=keys):
            for x in keys:
                yield from leaves(x)
        case Or(a=a, b=b):
            yield from leaves(a)
            yield from leaves(b)
        case Not(key=key):
            yield from leaves(key)
        case _:
            yield k


def to_obj(k: SearchKey) -> dict:
    match k:
        case All():
            return {"k": "all"}
        case And(keys=keys):
            return {"k": "and", "keys": [to_obj(x) for x in keys]}
        case Or(a=a, b=b):
            return {"k": "or", "a": to_obj(a), "b": to_obj(b)}
        case Not(key=key):
            return {"k": "not", "key": to_obj(key)}
        case Uids(ranges=ranges):
            return {"k": "uids", "ranges": [list(r) for r in ranges]}
        case Flag(flag=flag, present=present):
            return {"k": "flag", "flag": flag, "present": present}
        case Header(field=f, value=v):
            return {"k": "header", "field": f, "value": v}
        case Text(where=w, value=v):
            return {"k": "text", "where": w, "value": v}
        case Date(which=which, op=op, day=day):
            return {"k": "date", "which": which, "op": op, "day": day.isoformat()}
        case Size(op=op, n=n):
            return {"k": "size", "op": op, "n": n}
        case ModSeq(n=n):
            return {"k": "modseq", "n": n}
    raise ValueError(f"not a search key: {k!r}")


def from_obj(o: dict) -> SearchKey:
    try:
        match o["k"]:
            case "all":
                return All()
            case "and":
                return And(tuple(from_obj(x) for x in o["keys"]))
            case "or":
                return Or(from_obj(o["a"]), from_obj(o["b"]))
            case "not":
                return Not(from_obj(o["key"]))
            case "uids":
                ranges = tuple((int(a), int(b)) for a, b in o["ranges"])
                if any(a > b or a < 1 for a, b in ranges):
                    raise ValueError("bad uid range")
                return Uids(ranges)
            case "flag":
                return Flag(str(o["flag"]), bool(o.get("present", True)))
            case "header":
                return Header(str(o["field"]).lower(), str(o["value"]))
            case "text":
                if o["where"] not in ("body", "text"):
                    raise ValueError("bad text key")
                return Text(o["where"], str(o["value"]))
            case "date":
                if o["which"] not in ("internal", "sent") or o["op"] not in ("before", "on", "since"):
                    raise ValueError("bad date key")
                return Date(o["which"], o["op"], date.fromisoformat(o["day"]))
            case "size":
                if o["op"] not in ("larger", "smaller"):
                    raise ValueError("bad size key")
                return Size(o["op"], int(o["n"]))
            case "modseq":
                return ModSeq(int(o["n"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed search key: {exc}") from exc
    raise ValueError(f"unknown search key {o.get('k')!r}")
