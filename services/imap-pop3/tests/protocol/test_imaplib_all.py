"""The whole command set through Python's imaplib, as a client library sees it (one call per command)."""

from __future__ import annotations

import imaplib

from imaptest import client_tls, make_message


def test_every_imaplib_command(srv):
    for i in range(3):
        srv.deliver("alice@example.test", make_message(f"lib {i}", body=f"number {i}\n"))
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    assert m.capability()[0] == "OK"
    assert m.noop()[0] == "OK"
    m.starttls(client_tls())
    assert m.login("alice@example.test", "alice-pw")[0] == "OK"
    assert m.namespace()[1] == [b'(("" "/")) NIL NIL']
    assert m.create("Lib/Sub")[0] == "OK"
    assert m.subscribe("Lib/Sub")[0] == "OK"
    assert any(b'"Lib/Sub"' in x for x in m.lsub()[1])
    assert m.unsubscribe("Lib/Sub")[0] == "OK"
    assert any(b'"Lib/Sub"' in x for x in m.list('""', "Lib/*")[1])
    assert m.rename("Lib/Sub", "Lib/Renamed")[0] == "OK"
    assert m.status("INBOX", "(MESSAGES UIDNEXT)")[1][0].startswith(b'"INBOX" (MESSAGES 3 UIDNEXT 4')
    assert (
        m.append("Lib/Renamed", "(\\Seen)", imaplib.Time2Internaldate(1_700_000_000), make_message("x"))[0]
        == "OK"
    )
    assert m.select("INBOX", readonly=True)[1] == [b"3"]  # EXAMINE
    assert m.select("INBOX")[1] == [b"3"]
    assert m.check()[0] == "OK"
    assert m.search(None, "ALL")[1] == [b"1 2 3"]
    assert m.search("UTF-8", "BODY", "number")[1] == [b"1 2 3"]
    typ, data = m.fetch("2", "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY.PEEK[TEXT])")
    assert typ == "OK" and data[0][1] == b"number 1\r\n"
    assert m.store("1", "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert m.copy("2", "Lib/Renamed")[0] == "OK"
    assert m.uid("COPY", "3", "Archive")[0] == "OK"
    assert m.uid("STORE", "3", "+FLAGS", "(\\Flagged)")[0] == "OK"
    assert m.uid("FETCH", "3", "(FLAGS)")[1][0] == b"3 (UID 3 FLAGS (\\Flagged \\Recent))"
    assert m.uid("SEARCH", None, "FLAGGED")[1] == [b"3"]
    assert m.uid("MOVE", "3", "Trash")[0] == "OK"
    assert m.expunge()[1] == [b"3", b"1"]  # imaplib also collected the EXPUNGE of the MOVE
    assert m.unselect()[0] == "OK"
    assert m.select("Lib/Renamed")[1] == [b"2"]
    assert m.close()[0] == "OK"
    assert m.delete("Lib/Renamed")[0] == "OK"
    assert m.logout()[0] == "BYE"
