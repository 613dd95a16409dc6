"""LIST/LSUB mailbox patterns (RFC 3501 §6.3.8) without regular expressions: a table, an oracle check
on small random patterns, and the hostile patterns that used to backtrack for a minute."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailflow_imap_pop3.imap.patterns import MailboxPattern

TABLE = [
    ("*", "INBOX", True),
    ("*", "a/b/c", True),
    ("%", "INBOX", True),
    ("%", "a/b", False),
    ("a/%", "a/b", True),
    ("a/%", "a/b/c", False),
    ("a/*", "a/b/c", True),
    ("a/*", "a", False),
    ("a*", "a", True),
    ("%/%", "a/b", True),
    ("%/%", "a/b/c", False),
    ("*x%y", "x/xy", True),  # the leftmost "x" would leave "/x" for %: a greedy matcher gets this wrong
    ("*x%y", "x/x/y", False),
    ("a%*%b", "a/q/b", True),  # a run of wildcards with a * in it is *
    ("a%%b", "a/b", False),
    ("a%%b", "azzb", True),
    ("INBOX", "INBOX", True),
    ("INBOX", "INBOX/a", False),
    ("", "", True),
    ("", "a", False),
    ("ab*ba", "aba", False),  # head and tail may not overlap
    ("ab*ba", "abba", True),
    ("*a*a*a*b", "aaaaaaaaaab", True),
    ("Entwürfe/%", "Entwürfe/x", True),
]


@pytest.mark.parametrize(("pattern", "name", "expected"), TABLE)
def test_table(pattern, name, expected):
    assert MailboxPattern(pattern).matches(name) is expected


def oracle(pattern: str, name: str) -> bool:
    """The regular expression the server used to build (fine for the short inputs given here)."""
    rx = "".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, name, re.S) is not None


@given(st.text("ab/*%", max_size=8), st.text("ab/", max_size=10))
def test_property_agrees_with_the_regular_expression_it_replaces(pattern, name):
    assert MailboxPattern(pattern).matches(name) is oracle(pattern, name)


@pytest.mark.parametrize(
    ("pattern", "name"),
    [
        ("*a" * 14 + "b", "a" * 40),  # exponential for a backtracking regular expression
        ("*a" * 14 + "%b", "a" * 40 + "b"),
        ("*%" * 30_000 + "x", "a" * 1000),  # a whole command line of wildcards is one
        ("%a" * 500 + "%b", "a" * 999 + "b"),  # a name of 1000 characters is the store's longest
        ("*" + "a*" * 500 + "%b", "a" * 999 + "b"),
    ],
)
def test_hostile_patterns_are_cheap(pattern, name):
    started = time.thread_time()
    for _ in range(10):
        MailboxPattern(pattern).matches(name)
    assert time.thread_time() - started < 0.5  # a regular expression: a minute or more
