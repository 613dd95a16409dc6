"""A set of UIDs as sorted, merged ranges: how UID lists travel and how they become SQL.

Few ranges become `uid BETWEEN` terms; many (a scattered FETCH list) become one BETWEEN over the
whole span plus an exact membership test in Python (bisect), so no SQL statement ever carries
thousands of parameters. Malformed ranges raise Invalid.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

from mailflow.errors import Invalid

MAX_SQL_RANGES = 32
MAX_UID = 2**63 - 1


class UidSet:
    def __init__(self, ranges: Iterable):
        merged: list[list[int]] = []
        try:
            pairs = sorted((int(lo), int(hi)) for lo, hi in ranges)
        except (TypeError, ValueError) as exc:
            raise Invalid("uids must be [low, high] pairs") from exc
        for lo, hi in pairs:
            if lo < 1 or hi < lo or hi > MAX_UID:
                raise Invalid(f"bad uid range {lo}:{hi}")
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self.ranges = merged
        self._lows = [r[0] for r in merged]

    @classmethod
    def of(cls, uids: Iterable[int]) -> UidSet:
        return cls([(u, u) for u in uids])

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __contains__(self, uid: int) -> bool:
        i = bisect_right(self._lows, uid) - 1
        return i >= 0 and uid <= self.ranges[i][1]

    @property
    def exact_in_sql(self) -> bool:
        return len(self.ranges) <= MAX_SQL_RANGES

    def sql(self, column: str = "uid", prefix: str = "u") -> tuple[str, dict]:
        """' AND (...)' selecting these UIDs; a superset when not exact_in_sql (filter with `in`).
        Parameter names start with `prefix`."""
        if not self.ranges:
            return " AND 1 = 0", {}
        if self.exact_in_sql:
            terms, params = [], {}
            for i, (lo, hi) in enumerate(self.ranges):
                if lo == hi:
                    terms.append(f"{column} = :{prefix}l{i}")
                    params[f"{prefix}l{i}"] = lo
                else:
                    terms.append(f"{column} BETWEEN :{prefix}l{i} AND :{prefix}h{i}")
                    params[f"{prefix}l{i}"], params[f"{prefix}h{i}"] = lo, hi
            return " AND (" + " OR ".join(terms) + ")", params
        lo, hi = f"{prefix}lo", f"{prefix}hi"
        return f" AND {column} BETWEEN :{lo} AND :{hi}", {lo: self.ranges[0][0], hi: self.ranges[-1][1]}

    def filter(self, rows: list, index: int = 0) -> list:
        """Keep the rows whose column `index` is in the set (a no-op when the SQL was exact)."""
        if self.exact_in_sql:
            return rows
        return [r for r in rows if r[index] in self]
