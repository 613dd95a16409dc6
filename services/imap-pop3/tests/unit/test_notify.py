"""NOTIFY's choice of group (RFC 5465): the first group naming a mailbox decides; SUBSCRIBED is decided when
the news is told; the backlog is bounded."""

from __future__ import annotations

from mailflow.contracts.messages import MailboxEvent
from mailflow_imap_pop3.imap.commands.notify import MAX_NAMES, MAX_PENDING, Notifier
from mailflow_imap_pop3.imap.syntax import NotifyGroup

NEW = ("MessageNew", "MessageExpunge")


def event(name: str, kind: str = "appended", mailbox_id: int = 1) -> MailboxEvent:
    return MailboxEvent(user_id=1, mailbox_id=mailbox_id, mailbox=name, kind=kind, uids=[1])


def test_every_group_that_names_a_mailbox_counts():
    n = Notifier((
        NotifyGroup("MAILBOXES", frozenset({"Junk"})),  # NONE, but PERSONAL below names Junk too
        NotifyGroup("SUBTREE", frozenset({"Lists", "A/b"}), NEW),
        NotifyGroup("PERSONAL", frozenset(), ("MailboxName",)),
    ))  # fmt: skip
    assert n.events_for("Junk", set()) == {"MailboxName"}
    assert n.events_for("Lists/python", set()) == {*NEW, "MailboxName"}
    assert n.wants("Lists", "MessageNew") and n.wants("Lists/python", "MessageExpunge")
    assert not n.wants("Listsx", "MessageNew") and n.wants("Listsx", "MailboxName")
    assert (
        n.wants("A/b/c/d", "MessageNew")
        and not n.wants("A", "MessageNew")
        and not n.wants("A/bc", "MessageNew")
    )
    assert n.events_for("INBOX", set()) == {"MailboxName"}
    n = Notifier((NotifyGroup("INBOXES", frozenset(), NEW),))  # §6.3: Sieve delivers anywhere
    assert n.wants("Archive", "MessageNew") and not n.wants("Archive", "FlagChange")


def test_subscribed_is_decided_when_told():
    n = Notifier(
        (NotifyGroup("SUBSCRIBED", frozenset(), NEW), NotifyGroup("MAILBOXES", frozenset({"X"}), NEW))
    )
    assert n.wants("Anything", "MessageNew") and not n.wants("Anything", "FlagChange")
    assert n.events_for("Anything", {"Other"}) == set()
    assert n.events_for("Anything", {"Anything"}) == set(NEW)
    assert n.events_for("X", set()) == set(NEW)


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
