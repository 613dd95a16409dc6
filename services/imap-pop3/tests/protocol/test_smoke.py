import imaplib
import poplib

from imaptest import make_message


def test_imap_and_pop3_basics(srv):
    srv.deliver("alice@example.test", make_message("first"))
    srv.deliver("alice@example.test", make_message("second"))
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    print(m.capabilities)
    m.login("alice@example.test", "alice-pw")
    typ, data = m.select("INBOX")
    assert data == [b"2"]
    typ, data = m.fetch("1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE BODY.PEEK[])")
    print(typ, data)
    typ, data = m.search(None, "SUBJECT", "second")
    assert data == [b"2"]
    m.logout()
    p = poplib.POP3("127.0.0.1", srv.port("pop3"))
    p.user("alice@example.test")
    p.pass_("alice-pw")
    assert p.stat()[0] == 2
    resp, lines, octets = p.retr(1)
    assert b"Subject: first" in lines
    p.quit()
