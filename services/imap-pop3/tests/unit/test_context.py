"""Search contexts (RFC 5267 §4, imap/commands/context.py) without a server: what the store is asked
when messages change (only about the changed ones), and a store failure ending a context."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from mailflow.store import search as sk
from mailflow.store.api import SEEN, Changes, MailboxStatus, MessageMeta, Selected
from mailflow_imap_pop3.imap.commands import context
from mailflow_imap_pop3.imap.syntax import Search
from mailflow_imap_pop3.imap.view import MailboxView


class Store:
    def __init__(self, answer=None, fail=False):
        self.asked: list = []
        self.answer, self.fail = answer or [], fail

    async def search(self, principal, mailbox_id, key):
        self.asked.append(key)
        if self.fail:
            raise OSError("store down")
        return self.answer


def session(n: int, store: Store):
    status = MailboxStatus(1, "INBOX", 7, n + 1, n, 0, 0, 10)
    sel = Selected(status, list(range(1, n + 1)), [frozenset()] * n, [1] * n)
    out: list[bytes] = []
    s = SimpleNamespace(view=MailboxView("INBOX", sel, False), store=store, principal=None, write=out.append,
                        ctx=SimpleNamespace(settings=SimpleNamespace(max_search_contexts=8)))  # fmt: skip
    return s, out


def arrive(view: MailboxView, uids: list[int], flags=frozenset()) -> None:
    status = MailboxStatus(1, "INBOX", 7, uids[-1] + 1, 0, 0, 0, 20)
    view.apply(Changes(status=status, updated=[MessageMeta(u, flags, 20) for u in uids], expunged=[]), True, False)


def start(s, tag: str, key, hits: list[int]) -> None:
    args = Search(key, returns=frozenset({"ALL", "UPDATE"}))
    context.start(s, tag, True, args, key, None, [u - 1 for u in hits])


def test_content_criteria_ask_the_store_about_new_messages_only():
    store = Store(answer=[10_002])
    s, out = session(10_000, store)
    start(s, "h", sk.Header("subject", "x"), [5, 9])
    arrive(s.view, [10_001, 10_002])
    for i in range(0, 10_000, 2):  # and flags changed on half the mailbox: no matter for a subject
        s.view.update_flags([MessageMeta(i + 1, frozenset({SEEN}), 21)])
    asyncio.run(context.update(s))
    assert store.asked == [sk.And((sk.Header("subject", "x"), sk.Uids(((10_001, 10_002),))))]
    assert out == [b'* ESEARCH (TAG "h") UID ADDTO (0 10002)\r\n']


def test_flag_criteria_never_ask_the_store():
    store = Store()
    s, out = session(100, store)
    start(s, "f", sk.Flag(SEEN, False), list(range(1, 101)))
    s.view.update_flags([MessageMeta(3, frozenset({SEEN}), 21)])
    arrive(s.view, [101], frozenset({SEEN}))
    asyncio.run(context.update(s))
    assert store.asked == [] and out == [b'* ESEARCH (TAG "f") UID REMOVEFROM (0 3)\r\n']


def test_a_store_failure_ends_the_context_with_noupdate():
    s, out = session(10, Store(fail=True))
    start(s, "h", sk.Header("subject", "x"), [1])
    arrive(s.view, [11])
    asyncio.run(context.update(s))
    assert out == [b'* NO [NOUPDATE "h"] Search results are no longer updated\r\n']
    assert s.view.contexts == {} and s.view.touched == set()
