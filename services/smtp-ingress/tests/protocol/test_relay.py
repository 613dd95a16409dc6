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
