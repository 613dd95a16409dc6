"""QRESYNC (RFC 7162 §3.2): which of the UIDs a client knows are gone, as UID ranges for VANISHED (EARLIER).

Pure functions, no I/O. The inputs are the UIDs present now (the view, ascending), the UIDs the client
asks about (its known-uids, or a UID FETCH's set, as ascending ranges already cut to below UIDNEXT), and
the store's tombstones since the client's MODSEQ with whether they are complete:
- complete: the tombstones among the known UIDs, less any still numbered in the view (exact);
- not complete (the store pruned tombstones past that MODSEQ): every known UID not present now, which
  RFC 7162 §3.2.5.2 allows, narrowed by the client's sequence match data: when the client's sequence
  number s had UID u and the mailbox's s-th message still has UID u, nothing below u has gone.
Costs are bounded by the number of ranges (the parser caps them) plus the UIDs present, never by the
width of a range: "1:4294967295" costs what "1:5" does.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

Ranges = list[tuple[int, int]]


def vanished(
    present: Sequence[int],
    known: Ranges,
    tombstones: Sequence[int],
    complete: bool,
    match: tuple[Ranges, Ranges] | None = None,
) -> Ranges:
    """The UID ranges to report as vanished (ascending, disjoint)."""
    if complete:
        gone = [u for u in tombstones if _within(known, u) and not _contains(present, u)]
        return as_ranges(gone)
    lower = unchanged_below(present, match) if match is not None else 1
    return _absent(present, [(max(lo, lower), hi) for lo, hi in known if hi >= lower])


def unchanged_below(present: Sequence[int], match: tuple[Ranges, Ranges]) -> int:
    """The lowest UID the match data cannot vouch for (1: none). The pairs are walked as aligned runs
    (s..s+n-1 with u..u+n-1); in a run the present UID at s minus s never decreases as s grows, so the
    highest s where it equals u - s is found by bisection."""
    best = 0
    n = len(present)
    for s0, u0, length in _aligned(*match):
        hi_s = min(s0 + length - 1, n)
        if hi_s < s0:
            continue
        target = u0 - s0
        lo, hi = s0, hi_s  # last s in [lo, hi] with present[s-1] - s <= target
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if present[mid - 1] - mid <= target:
                lo = mid
            else:
                hi = mid - 1
        if present[lo - 1] - lo == target:
            best = max(best, present[lo - 1])
    return best + 1


def _aligned(seqs: Ranges, uids: Ranges):
    """(first sequence number, first UID, length) of the runs where both sets go up by one together."""
    i = j = 0
    s, u = (seqs[0][0], uids[0][0]) if seqs and uids else (0, 0)
    while i < len(seqs) and j < len(uids):
        length = min(seqs[i][1] - s, uids[j][1] - u) + 1
        yield s, u, length
        s, u = s + length, u + length
        if s > seqs[i][1]:
            i += 1
            if i < len(seqs):
                s = seqs[i][0]
        if u > uids[j][1]:
            j += 1
            if j < len(uids):
                u = uids[j][0]


def _absent(present: Sequence[int], known: Ranges) -> Ranges:
    out: Ranges = []
    for lo, hi in known:
        cur = lo
        k = bisect_left(present, lo)
        while k < len(present) and present[k] <= hi:
            if present[k] > cur:
                out.append((cur, present[k] - 1))
            cur = present[k] + 1
            k += 1
        if cur <= hi:
            out.append((cur, hi))
    return out


def _within(ranges: Ranges, u: int) -> bool:
    k = bisect_right(ranges, (u, float("inf"))) - 1
    return k >= 0 and ranges[k][0] <= u <= ranges[k][1]


def _contains(sorted_uids: Sequence[int], u: int) -> bool:
    k = bisect_left(sorted_uids, u)
    return k < len(sorted_uids) and sorted_uids[k] == u


def as_ranges(uids: Sequence[int]) -> Ranges:
    """Ascending UIDs (repeats ignored) as (low, high) runs."""
    out: Ranges = []
    for u in uids:
        if out and u == out[-1][1] + 1:
            out[-1] = (out[-1][0], u)
        elif not out or u > out[-1][1]:
            out.append((u, u))
    return out
