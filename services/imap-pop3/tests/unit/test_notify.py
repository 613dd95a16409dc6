"""NOTIFY's choice of group (RFC 5465): the first group naming a mailbox decides; SUBSCRIBED is decided when
the news is told; the backlog is bounded."""

from __future__ import annotations

from mailflow.contracts.messages import MailboxEvent
from mailflow_imap_pop3.imap.commands.notify import MAX_NAMES, MAX_PENDING, Notifier
from mailflow_imap_pop3.imap.syntax import NotifyGroup

NEW = ("MessageNew", "MessageExpunge")


def event(name: str, kind: str = "appended", mailbox_id: int = 1) -> MailboxEvent:
    return MailboxEvent(user_id=1, mailbox_id=mailbox_id, mailbox=name, kind=kind, uids=[1])


def test_the_first_group_that_names_a_mailbox_decides():
    n = Notifier((
        NotifyGroup("MAILBOXES", frozenset({"Junk"})),  # NONE: Junk is excluded from PERSONAL below
        NotifyGroup("SUBTREE", frozenset({"Lists", "A/b"}), NEW),
        NotifyGroup("PERSONAL", frozenset(), ("MailboxName",)),
    ))  # fmt: skip
    assert not n.wants("Junk", "MessageNew")
    assert n.wants("Lists", "MessageNew") and n.wants("Lists/python", "MessageExpunge")
    assert not n.wants("Listsx", "MessageNew") and n.wants("Listsx", "MailboxName")
    assert not n.wants("Lists/python", "MailboxName")  # SUBTREE named it first, without MailboxName
    assert (
        n.wants("A/b/c/d", "MessageNew")
        and not n.wants("A", "MessageNew")
        and not n.wants("A/bc", "MessageNew")
    )


def test_subscribed_is_decided_when_told():
    n = Notifier((NotifyGroup("SUBSCRIBED", frozenset(), ()), NotifyGroup("PERSONAL", frozenset(), NEW)))
    assert n.wants("Anything", "MessageNew")  # perhaps not subscribed: PERSONAL's then
    assert n.group_for("Anything", {"Other"}).filter == "PERSONAL"
    assert n.group_for("Anything", {"Anything"}).filter == "SUBSCRIBED"  # subscribed: NONE wins
    n = Notifier((NotifyGroup("SUBSCRIBED", frozenset(), NEW),))
    assert n.wants("X", "MessageNew") and n.group_for("X", set()) is None


def test_backlog_is_bounded():
    n = Notifier((NotifyGroup("PERSONAL", frozenset(), (*NEW, "MailboxName")),))
    for i in range(MAX_PENDING):
        assert n.add(event(f"B{i}", mailbox_id=i))
        assert n.add(event(f"B{i}", "expunged", mailbox_id=i))  # the same mailbox: one entry
    assert len(n.pending) == MAX_PENDING and not n.overflow
    assert n.add(event("one more", mailbox_id=MAX_PENDING))
    assert n.overflow and not n.pending and not n.names
    assert not n.add(event("after"))  # nothing more is kept once it overflowed
    n = Notifier((NotifyGroup("PERSONAL", frozenset(), ("MailboxName",)),))
    for i in range(MAX_NAMES + 1):
        n.add(event(f"N{i}", "mailbox_created", mailbox_id=i))
    assert n.overflow and not n.names
