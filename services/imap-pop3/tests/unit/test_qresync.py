"""qresync.vanished: the UIDs a QRESYNC client is told are gone, exact from complete tombstones, every
known UID not present otherwise (narrowed by sequence match data), checked against a brute-force
reading of RFC 7162 §3.2.5.2 on random mailboxes; and the cost does not grow with a range's width."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow_imap_pop3.imap.qresync import as_ranges, unchanged_below, vanished


def expand(ranges):
    return [u for lo, hi in ranges for u in range(lo, hi + 1)]


def test_complete_tombstones_are_the_answer_within_the_known_uids():
    present = [1, 2, 4, 6]
    assert vanished(present, [(1, 6)], [3, 5], True) == [(3, 3), (5, 5)]
    assert vanished(present, [(1, 4)], [3, 5], True) == [(3, 3)]
    assert vanished(present, [(1, 6)], [3, 4, 5], True) == [(3, 3), (5, 5)]  # 4 still numbered: not yet
    assert vanished(present, [], [3, 5], True) == []


def test_incomplete_tombstones_give_every_known_uid_absent():
    present = [2, 4, 6]
    assert vanished(present, [(1, 6)], [5], False) == [(1, 1), (3, 3), (5, 5)]
    assert vanished(present, [(1, 10)], [], False) == [(1, 1), (3, 3), (5, 5), (7, 10)]
    assert vanished([], [(1, 4_294_967_295)], [], False) == [(1, 4_294_967_295)]


def test_match_data_vouch_for_what_lies_below_a_pair_that_still_holds():
    present = [2, 4, 6, 9]
    assert unchanged_below(present, ([(1, 1)], [(2, 2)])) == 3  # seq 1 is still UID 2
    assert unchanged_below(present, ([(2, 2)], [(2, 2)])) == 1  # seq 2 is UID 4 now
    assert unchanged_below(present, ([(2, 4)], [(3, 5)])) == 1  # no pair of the run holds
    assert unchanged_below(present, ([(1, 1), (3, 4)], [(2, 2), (6, 6), (9, 9)])) == 10  # 3->6 and 4->9 hold
    assert vanished(present, [(1, 9)], [], False, ([(1, 1)], [(2, 2)])) == [(3, 3), (5, 5), (7, 8)]


def _brute_below(present, seqs, uids):
    best = 0
    for s, u in zip(expand(seqs), expand(uids), strict=True):
        if s <= len(present) and present[s - 1] == u:
            best = max(best, u)
    return best + 1


@settings(max_examples=300, deadline=None)
@given(
    st.sets(st.integers(1, 60), max_size=40),
    st.lists(st.tuples(st.integers(1, 60), st.integers(0, 5)), max_size=6),
    st.data(),
)
def test_unchanged_below_agrees_with_the_pairs_one_by_one(present_set, seq_spans, data):
    present = sorted(present_set)
    seqs = as_ranges(sorted({s for a, n in seq_spans for s in range(a, a + n + 1)}))
    count = len(expand(seqs))
    uids = as_ranges(sorted(data.draw(st.sets(st.integers(1, 80), min_size=count, max_size=count))))
    assert unchanged_below(present, (seqs, uids)) == _brute_below(present, seqs, uids)


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(1, 200)), st.sets(st.integers(1, 200)), st.sets(st.integers(1, 200)))
def test_incomplete_answer_is_every_known_uid_not_present(present, known, tombstones):
    ranges = as_ranges(sorted(known))
    got = expand(vanished(sorted(present), ranges, sorted(tombstones), False))
    assert got == sorted(known - present)


def test_cost_follows_ranges_and_uids_not_widths():
    present = list(range(1, 200_001, 2))  # 100,000 messages, every other UID gone
    t0 = time.perf_counter()
    gone = vanished(present, [(1, 4_294_967_295)], [], False, ([(1, 4_294_967_295)], [(1, 4_294_967_295)]))
    assert gone[0] == (2, 2) and gone[-1] == (200_000, 4_294_967_295) and len(gone) == 100_000
    assert time.perf_counter() - t0 < 1.0
