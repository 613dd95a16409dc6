"""A user's IMAP keywords, each mapped to one bit (0..62) of messages.keywords.

Keywords compare case-insensitively and keep the spelling they were first stored with. A user has at
most 63; once full, new keywords are not stored (Selected.permanent_keywords is False, so IMAP leaves
\\* out of PERMANENTFLAGS and clients know).
"""

from __future__ import annotations

from collections.abc import Iterable

from mailflow_mailbox_store.db import Tx
from mailflow_mailbox_store.names import BIT_FLAGS, MAX_KEYWORDS


class Keywords:
    def __init__(self, rows: Iterable[tuple[int, str]]):
        self.by_bit: dict[int, str] = {}
        self.by_lower: dict[str, int] = {}
        for bit, name in rows:
            self.by_bit[bit] = name
            self.by_lower[name.lower()] = bit
        self._sets: dict[tuple[int, int], frozenset[str]] = {}

    @property
    def full(self) -> bool:
        return len(self.by_bit) >= MAX_KEYWORDS

    def mask(self, names: Iterable[str]) -> int:
        """Bits of the keywords known; unknown ones are left out."""
        m = 0
        for n in names:
            bit = self.by_lower.get(n.lower())
            if bit is not None:
                m |= 1 << bit
        return m

    def flags(self, bits: int, kw: int) -> frozenset[str]:
        """System flag bits and keyword bits -> the flag set (cached: few distinct combinations exist)."""
        key = (bits, kw)
        out = self._sets.get(key)
        if out is None:
            names = [name for bit, name in BIT_FLAGS if bits & bit]
            k, i = kw, 0
            while k:
                if k & 1 and i in self.by_bit:
                    names.append(self.by_bit[i])
                k >>= 1
                i += 1
            out = self._sets[key] = frozenset(names)
        return out


def load(tx: Tx, user_id: int) -> Keywords:
    return Keywords(tx.all("SELECT bit, name FROM keywords WHERE user_id = :u", {"u": user_id}))


def ensure(tx: Tx, user_id: int, names: Iterable[str]) -> Keywords:
    """Load the user's keywords, adding the given ones while bits are free."""
    kws = load(tx, user_id)
    for n in names:
        if n.lower() in kws.by_lower or kws.full:
            continue
        bit = next(b for b in range(MAX_KEYWORDS) if b not in kws.by_bit)
        tx.run(
            "INSERT INTO keywords (user_id, bit, name) VALUES (:u, :b, :n)", {"u": user_id, "b": bit, "n": n}
        )
        kws.by_bit[bit] = n
        kws.by_lower[n.lower()] = bit
        kws._sets.clear()
    return kws
