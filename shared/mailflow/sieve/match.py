"""Sieve comparisons (RFC 5228 §2.7): :is, :contains and :matches under i;octet and i;ascii-casemap.

Pure, and linear in the message's text for a given key: no regular expression is built from a script.
`:matches` is a glob (`*` any run, `?` one character, `\\` quotes the next) matched without backtracking:
the key is cut at its unquoted `*`s; the first piece must match at the start, the last at the end, and
each one between is found leftmost after the one before (leftmost is always right for a glob: it leaves
the most text to the pieces after it). Pieces without `?` are found with str.find; a piece with `?` is
tried at each position, so the worst case is (text length x piece length), never exponential.
i;ascii-casemap folds A-Z only (RFC 4790 §9.2); `?` matches one character of the decoded text. Nothing
here raises.
"""

from __future__ import annotations

from mailflow.sieve.script import Match

_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
ANY = None  # a `?` in a piece


def fold(text: str, comparator: str) -> str:
    return text if comparator == "i;octet" else text.translate(_ASCII_LOWER)


def compare(value: str, key: str, m: Match) -> bool:
    v, k = fold(value, m.comparator), fold(key, m.comparator)
    if m.kind == "is":
        return v == k
    if m.kind == "contains":
        return k in v
    return glob(v, k)


def pieces(pattern: str) -> list[list[str | None]]:
    """The key cut at its unquoted `*`s; each piece a list of characters and ANY."""
    out: list[list[str | None]] = [[]]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out[-1].append(pattern[i + 1])
            i += 2
            continue
        if c == "*":
            out.append([])
        else:
            out[-1].append(ANY if c == "?" else c)
        i += 1
    return out


def _at(text: str, i: int, piece: list[str | None]) -> bool:
    return all(p is ANY or text[i + k] == p for k, p in enumerate(piece))


def _find(text: str, piece: list[str | None], start: int, end: int) -> int:
    """The leftmost i in [start, end - len(piece)] where `piece` matches, else -1."""
    if ANY not in piece:
        return text.find("".join(piece), start, end)  # type: ignore[arg-type]
    for i in range(start, end - len(piece) + 1):
        if _at(text, i, piece):
            return i
    return -1


def glob(text: str, pattern: str) -> bool:
    parts = pieces(pattern)
    if len(parts) == 1:
        return len(text) == len(parts[0]) and _at(text, 0, parts[0])
    first, last = parts[0], parts[-1]
    if len(text) < len(first) + len(last):
        return False
    end = len(text) - len(last)
    if not (_at(text, 0, first) and _at(text, end, last)):
        return False
    pos = len(first)
    for piece in parts[1:-1]:
        i = _find(text, piece, pos, end)
        if i < 0:
            return False
        pos = i + len(piece)
    return True
