"""The Learner against a real rspamd controller (tests/support/rspamd.py): learned, already known,
refused, unreachable, too many, too big: each counted, none raised to the caller, nothing waited for.
(The whole path, IMAP MOVE into Junk through the store process, is imap-pop3's test_junk_learning.py.)"""

from __future__ import annotations

import socket

from mailflow.rspamd import RspamdClient
from mailflow_mailbox_store import metrics
from mailflow_mailbox_store.learning import Learner

WORDS = b"limited time pharmacy discount unclaimed parcel customs fee wallet recovery phrase bonus\r\n" * 3


def body(n: int) -> bytes:
    """A message of its own: rspamd knows a text it learned before, whatever the headers say."""
    words = b" ".join(b"case%s" % bytes([97 + int(d)]) for d in str(n))
    return b"From: x@spam.test\r\nSubject: parcel %d\r\nMessage-ID: <learn%d@spam.test>\r\n\r\n" % (n, n) + WORDS + words + b"\r\n"


class Bodies:
    """The blob store's read, over a dict: locator -> bytes."""

    def __init__(self, items: dict[str, bytes]):
        self.items = items

    async def read(self, locators: list[str]) -> list[bytes]:
        return [self.items[x] for x in locators]


def counts(kind: str) -> dict[str, float]:
    return {
        r: metrics.RSPAMD_LEARN.labels(kind, r)._value.get()
        for r in ("learned", "ignored", "failed", "dropped", "too_big")
    }


def delta(before: dict[str, float], kind: str) -> dict[str, float]:
    return {k: v - before[k] for k, v in counts(kind).items() if v != before[k]}


async def test_learned_then_already_known(rspamd):
    bodies = Bodies({"a": body(1)})
    learner = Learner(RspamdClient(rspamd.controller_url, 10, rspamd.password), bodies.read)
    before = counts("spam")
    learner.moved(True, [("a", 100)])  # returns at once: the IMAP reply never waits
    learner.moved(True, [("a", 100)])
    await learner.idle()
    await learner.close()
    assert delta(before, "spam") == {"learned": 1, "ignored": 1}


async def test_a_wrong_password_and_a_missing_body_fail_and_are_counted(rspamd):
    bodies = Bodies({"a": body(2)})
    learner = Learner(RspamdClient(rspamd.controller_url, 10, "wrong"), bodies.read)
    before = counts("ham")
    learner.moved(False, [("a", 100), ("gone", 100)])
    await learner.idle()
    await learner.close()
    assert delta(before, "ham") == {"failed": 2}


async def test_rspamd_down_fails_and_the_next_one_is_still_tried():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    learner = Learner(RspamdClient(f"http://127.0.0.1:{closed}", 1), Bodies({"a": body(3)}).read)
    before = counts("spam")
    learner.moved(True, [("a", 100), ("a", 100)])
    await learner.idle()
    await learner.close()
    assert delta(before, "spam") == {"failed": 2}


async def test_bounded_queue_and_size(rspamd):
    bodies = Bodies({f"m{i}": body(10 + i) for i in range(5)})
    learner = Learner(RspamdClient(rspamd.controller_url, 10, rspamd.password), bodies.read, queue_size=2, max_bytes=1000)
    before = counts("spam")
    learner.moved(True, [("m0", 100), ("big", 5000), ("m1", 100), ("m2", 100), ("m3", 100)])
    await learner.idle()
    await learner.close()
    assert delta(before, "spam") == {"learned": 2, "too_big": 1, "dropped": 2}
