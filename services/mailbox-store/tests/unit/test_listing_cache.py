"""listings.ListingCache: a listing counts only for the exact mailbox state it was built for; large
mailboxes only; bounded in bytes, the least recently used first out."""

from __future__ import annotations

from array import array

from mailflow_mailbox_store.listings import Listing, ListingCache, key_of


def listing(mailbox_id: int, messages: int, modseq: int = 1) -> Listing:
    key = key_of(1, mailbox_id, 7, messages + 1, modseq)
    uids = array("I", range(1, messages + 1))
    return Listing(key, mailbox_id, 7, messages + 1, modseq, uids, array("H", [0] * messages), [[]], array("q", [1] * messages), messages, 0, [0])


def test_a_listing_is_only_good_for_its_own_mailbox_state():
    cache = ListingCache(max_bytes=10**6, min_messages=10)
    a = listing(1, 100)
    cache.put(a)
    assert cache.get(a.key) is a
    assert cache.get(key_of(1, 1, 7, 101, 2)) is None  # the mailbox changed since (HIGHESTMODSEQ)
    assert cache.latest(1) is a  # still there to be refreshed from
    cache.put(listing(2, 9))  # too small to be worth keeping
    assert cache.latest(2) is None


def test_the_cache_is_bounded_in_bytes():
    one = listing(1, 100).nbytes
    cache = ListingCache(max_bytes=2 * one + 10, min_messages=10)
    a, b, c = listing(1, 100), listing(2, 100), listing(3, 100)
    cache.put(a)
    cache.put(b)
    assert cache.get(a.key) is a  # a is now the most recently used: b goes first
    cache.put(c)
    assert cache.latest(2) is None and cache.get(a.key) is a and cache.get(c.key) is c
    cache.put(listing(4, 1000))  # bigger than the whole budget: never kept, nothing evicted for it
    assert cache.latest(4) is None and cache.get(a.key) is a and cache.get(c.key) is c
    newer = listing(1, 100, modseq=2)
    cache.put(newer)  # replaces the mailbox's listing, its bytes counted once
    assert cache.latest(1) is newer and cache.get(c.key) is c
