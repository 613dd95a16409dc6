"""No open relay (issue 3 §3): without AUTH only local mailboxes are recipients, whatever the trick.

Each classic trick is tried on the MX listener without authentication; every one must be refused
(550 5.7.1 for relaying, 550 5.1.1 when it names no local mailbox, 501 when it is not an address),
and nothing may be queued. A catch-all on the local domain must not turn a trick into a relay.
"""

from __future__ import annotations

import pytest

TRICKS = [
    ("<user@elsewhere.test>", "550 5.7.1"),  # plain remote address
    ("<user%elsewhere.test@example.test>", "550 5.7.1"),  # percent hack
    ("<user%other@example.test>", "550 5.7.1"),  # percent hack, even though that mailbox exists
    ("<elsewhere.test!user@example.test>", "550 5.7.1"),  # UUCP bang path
    ("<@example.test:user@elsewhere.test>", "550 5.7.1"),  # source route through us
    ("<@example.test,@other.example.test:user@elsewhere.test>", "550 5.7.1"),  # longer source route
    ('<"user@elsewhere.test"@example.test>', "550 5.7.1"),  # quoted @ in the local part
    ('<"user%elsewhere.test"@example.test>', "550 5.7.1"),
    ("user@elsewhere.test", "550 5.7.1"),  # bare address, no brackets
    ("<user@elsewhere.test.>", "550 5.7.1"),  # trailing dot
    ("<USER@ELSEWHERE.TEST>", "550 5.7.1"),  # case
    ("<user@[127.0.0.2]>", "550 5.7.1"),  # address literal
    ("<user@[IPv6:::1]>", "550 5.7.1"),
    ("<user@example.test@elsewhere.test>", "501 5.1.3"),  # two @
    ("<user@elsewhere.test>@example.test", "501 5.1.3"),  # path then junk
    ("<user@elsewhere.test> <alice@example.test>", "501 5.5.4"),  # two paths
    ("<user@example.test.elsewhere.test>", "550 5.7.1"),  # local domain as a prefix
    ("<user@xexample.test>", "550 5.7.1"),  # local domain as a suffix
    ("<alice@example.test\r\nRCPT TO:<user@elsewhere.test>>", "500 5.5.2"),  # CRLF injection (bare CR)
    ('<"user\\"@elsewhere.test"@example.test>', "550 5.7.1"),  # escaped quote
]


@pytest.mark.parametrize("catch_all", [False, True], ids=["plain", "with-catch-all"])
def test_every_relay_trick_is_refused(make_server, raw, store, catch_all):
    if catch_all:
        store.add_alias("@example.test", ["alice@example.test"])
    s = make_server(max_errors=100)  # more tricks than the default error budget
    c = raw(server=s)
    c.cmd("EHLO attacker.test", "250 ")
    c.cmd("MAIL FROM:<spam@attacker.test>", "250 2.1.0")
    for rcpt, expected in TRICKS:
        line = f"RCPT TO:{rcpt}".replace("\r\n", "\r")  # a bare CR inside the line, not a new line
        c.send(line)
        got = c.reply()
        assert got.startswith(expected), (rcpt, got)
    c.cmd("DATA", "554 5.5.1")  # none of them became a recipient
    assert s.messages == []


def test_local_recipients_still_work_next_to_the_tricks(raw, srv):
    c = raw()
    c.cmd("EHLO friend.test", "250 ")
    c.cmd("MAIL FROM:<friend@friend.test>", "250 2.1.0")
    c.cmd("RCPT TO:<user@elsewhere.test>", "550 5.7.1")
    c.cmd("RCPT TO:<@relay.test:alice@example.test>", "250 2.1.5")  # a source route is ignored (RFC 5321 §C)
    c.cmd('RCPT TO:<"alice"@example.test>', "250 2.1.5")  # quoted, but a plain local part
    c.cmd("DATA", "354 ")
    c.send_raw(b"Subject: hi\r\n\r\nx\r\n.\r\n")
    c.expect("250 2.0.0")
    assert [r.address for r in srv.messages[0][0].rcpt_to] == ["alice@example.test", "alice@example.test"]


def test_an_alias_forwards_only_to_its_own_targets_elsewhere(raw, srv, store):
    """team -> alice and carol elsewhere; away -> dave elsewhere only. An outside client reaches carol
    and dave through the aliases, and neither of them (nor anyone else there) by naming them."""
    store.add_alias("team@example.test", ["alice@example.test", "carol@elsewhere.test"])
    store.add_alias("away@example.test", ["dave@elsewhere.test"])
    c = raw()
    c.cmd("EHLO friend.test", "250 ")
    c.cmd("MAIL FROM:<friend@friend.test>", "250 2.1.0")
    c.cmd("RCPT TO:<carol@elsewhere.test>", "550 5.7.1")
    c.cmd("RCPT TO:<team@example.test> NOTIFY=FAILURE,DELAY", "250 2.1.5")
    c.cmd("RCPT TO:<away@example.test> ORCPT=rfc822;away@example.test", "250 2.1.5")
    c.cmd("RCPT TO:<dave%evil.test@elsewhere.test>", "550 5.7.1")
    c.cmd("DATA", "354 ")
    c.send_raw(b"Subject: hi\r\n\r\nx\r\n.\r\n")
    c.expect("250 2.0.0")
    [(qm, _)] = srv.messages
    got = [(r.address, r.notify, r.orcpt, r.forwarded_for) for r in qm.rcpt_to]
    assert got == [
        ("team@example.test", ["FAILURE", "DELAY"], None, None),  # the store gives alice her copy
        ("carol@elsewhere.test", ["FAILURE", "DELAY"], "rfc822;team@example.test", "team@example.test"),
        ("dave@elsewhere.test", [], "rfc822;away@example.test", "away@example.test"),
    ]  # away@example.test has no local user: no job of its own


def test_forwards_count_against_a_bound_per_transaction(make_server, raw, store):
    store.add_alias("list@example.test", [f"u{i}@elsewhere.test" for i in range(3)])
    s = make_server(max_expanded_recipients=5)
    c = raw(server=s)
    c.cmd("EHLO friend.test", "250 ")
    c.cmd("MAIL FROM:<friend@friend.test>", "250 2.1.0")
    c.cmd("RCPT TO:<list@example.test>", "250 2.1.5")  # 1 + 3 forwards
    c.cmd("RCPT TO:<sales@example.test>", "250 2.1.5")  # 5
    c.cmd("RCPT TO:<list@example.test>", "452 4.5.3")  # 9: the client sends it again later
