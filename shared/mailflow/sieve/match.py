"""Sieve comparisons (RFC 5228 §2.7, RFC 5231): :is, :contains, :matches, :value and :count under
i;octet, i;ascii-casemap and i;ascii-numeric.

Pure, and linear in the message's text for a given key: no regular expression is built from a script.
`:matches` is a glob (`*` any run, `?` one character, `\\` quotes the next) matched without backtracking:
the key is cut at its unquoted `*`s; the first piece must match at the start, the last at the end, and
each one between is found leftmost after the one before (leftmost is always right for a glob: it leaves
the most text to the pieces after it, and it is the "shortest match" RFC 5229 §3.2 wants for the match
variables). Pieces without `?` are found with str.find; a piece with `?` is tried at each position, so
the worst case is (text length x piece length), never exponential, and it is paid from a `Budget`.
Budget: every comparison spends the length of what it compares, and a piece with `?` its worst case
(positions x piece length) up front from a smaller allowance (it runs in Python, not in C); past either,
`TooCostly` is raised (the interpreter fails the script: the message is kept), so no script can make
one message cost more than a bounded amount of CPU (10K keys against a 4 MiB body, say).
i;ascii-casemap folds A-Z only (RFC 4790 §9.2); `?` matches one character of the decoded text;
i;ascii-numeric (§9.1) compares the leading digits as a number, a string without one being larger than
every number (and equal to another such string). Nothing here raises but TooCostly.
"""

from __future__ import annotations

from mailflow.sieve.script import Match


class TooCostly(RuntimeError):
    pass


class Budget:
    """What the comparisons of one script run may cost, in characters looked at."""

    def __init__(self, fast: int = 256 * 1024 * 1024, slow: int = 4 * 1024 * 1024):
        self.fast, self.slow = fast, slow

    def spend(self, n: int, slow: bool = False) -> None:
        if slow:
            self.slow -= n
        else:
            self.fast -= n
        if self.fast < 0 or self.slow < 0:
            raise TooCostly("the script's tests would read too much of the message")


UNBOUNDED = None  # no Budget: tests and one-off calls
_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
ANY = None  # a `?` in a piece
_INFINITY = float("inf")


def fold(text: str, comparator: str) -> str:
    return text if comparator == "i;octet" else text.translate(_ASCII_LOWER)


def numeric(text: str) -> float:
    n = 0
    while n < len(text) and "0" <= text[n] <= "9":
        n += 1
    return int(text[:n]) if n else _INFINITY


def order(a: str, b: str, comparator: str) -> int:
    """-1, 0 or 1 as a sorts before, with or after b under the comparator."""
    if comparator == "i;ascii-numeric":
        x, y = numeric(a), numeric(b)
    else:
        x, y = fold(a, comparator), fold(b, comparator)  # type: ignore[assignment]
    return (x > y) - (x < y)


def relate(a: str, b: str, m: Match) -> bool:
    c = order(a, b, m.comparator)
    return {"gt": c > 0, "ge": c >= 0, "lt": c < 0, "le": c <= 0, "eq": c == 0, "ne": c != 0}[m.relation]


def compare(value: str, key: str, m: Match, budget: Budget | None = None) -> bool:
    """:is, :contains or :value of one value against one key (:matches: `matches`; :count: the caller)."""
    if budget is not None:
        budget.spend(len(value) + len(key))
    if m.kind == "value":
        return relate(value, key, m)
    if m.comparator == "i;ascii-numeric":
        return order(value, key, m.comparator) == 0
    v, k = fold(value, m.comparator), fold(key, m.comparator)
    if m.kind == "contains":
        return k in v
    if m.kind == "matches":
        return glob(v, k, budget) is not None
    return v == k


def matches(value: str, key: str, comparator: str, budget: Budget | None = None) -> list[str] | None:
    """The match variables of `value` :matches `key` ([whole, first wildcard's text, ...]), or None."""
    if budget is not None:
        budget.spend(len(value) + len(key))
    caught = glob(fold(value, comparator), fold(key, comparator), budget)
    if caught is None:
        return None
    return [value] + [value[i:j] for i, j in caught]  # folding keeps every position


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


def _find(text: str, piece: list[str | None], start: int, end: int, budget: Budget | None) -> int:
    """The leftmost i in [start, end - len(piece)] where `piece` matches, else -1."""
    if ANY not in piece:
        return text.find("".join(piece), start, end)  # type: ignore[arg-type]
    if budget is not None:
        budget.spend(max(0, end - start - len(piece) + 1) * len(piece), slow=True)
    for i in range(start, end - len(piece) + 1):
        if _at(text, i, piece):
            return i
    return -1


def _questions(piece: list[str | None], at: int) -> list[tuple[int, int]]:
    return [(at + k, at + k + 1) for k, p in enumerate(piece) if p is ANY]


def glob(text: str, pattern: str, budget: Budget | None = None) -> list[tuple[int, int]] | None:
    """None if `text` does not match; else the (start, end) of the text each wildcard took, in order."""
    parts = pieces(pattern)
    if len(parts) == 1:
        ok = len(text) == len(parts[0]) and _at(text, 0, parts[0])
        return _questions(parts[0], 0) if ok else None
    first, last = parts[0], parts[-1]
    if len(text) < len(first) + len(last):
        return None
    end = len(text) - len(last)
    if not (_at(text, 0, first) and _at(text, end, last)):
        return None
    caught = _questions(first, 0)
    pos = len(first)
    for piece in parts[1:-1]:
        i = _find(text, piece, pos, end, budget)
        if i < 0:
            return None
        caught.append((pos, i))  # the `*` before this piece
        caught += _questions(piece, i)
        pos = i + len(piece)
    caught.append((pos, end))  # the last `*`
    return caught + _questions(last, end)
