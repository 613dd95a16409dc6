"""QUOTA (RFC 9208) over the real store: GETQUOTAROOT and GETQUOTA on the user's one root "" with
STORAGE in units of 1024 octets, no root for a user without a limit, STATUS DELETED and DELETED-STORAGE,
and APPEND past the quota refused with NO [OVERQUOTA]."""

from __future__ import annotations

import imaplib

from imaptest import Raw, make_message


def session(srv, who: str = "alice") -> Raw:
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    assert c.cmd("a0", f"LOGIN {who}@example.test {who}-pw")[-1].startswith(b"a0 OK")
    return c


def test_quota_is_advertised_after_login_only(srv):
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    assert b"QUOTA" not in c.cmd("a1", "CAPABILITY")[0]
    assert c.cmd("a2", "GETQUOTAROOT INBOX")[-1].startswith(b"a2 NO [CLIENTBUG]")  # not before login
    c.cmd("a3", "LOGIN alice@example.test alice-pw")
    caps = c.cmd("a4", "CAPABILITY")[0].split()
    assert b"QUOTA" in caps and b"QUOTA=RES-STORAGE" in caps and b"QUOTASET" not in caps


def test_a_user_without_a_limit_is_under_no_quota_root(srv, store):
    store.set_quota("alice@example.test", None)
    c = session(srv)
    assert c.cmd("a1", "GETQUOTAROOT INBOX") == [b'* QUOTAROOT "INBOX"', b"a1 OK GETQUOTAROOT completed"]
    assert c.cmd("a2", 'GETQUOTA ""')[-1].startswith(b"a2 NO [NONEXISTENT]")


def test_usage_rounds_up_and_the_limit_down_in_kibibytes(srv, store):
    store.set_quota("alice@example.test", 10 * 1024 * 1024 + 1000)  # 10 MiB and a bit: 10240 units
    srv.deliver("alice@example.test", make_message("one", body="x" * 3000))
    c = session(srv)
    used = int(c.cmd("s", "STATUS INBOX (SIZE)")[0].split(b"SIZE ")[1].rstrip(b")"))
    units = -(-used // 1024)
    assert units * 1024 >= used > (units - 1) * 1024
    lines = c.cmd("a1", "GETQUOTAROOT INBOX")
    assert lines == [b'* QUOTAROOT "INBOX" ""', b'* QUOTA "" (STORAGE %d 10240)' % units, b"a1 OK GETQUOTAROOT completed"]
    assert c.cmd("a2", 'GETQUOTA ""') == [b'* QUOTA "" (STORAGE %d 10240)' % units, b"a2 OK GETQUOTA completed"]
    assert c.cmd("a3", "GETQUOTA other")[-1].startswith(b"a3 NO [NONEXISTENT]")
    assert c.cmd("a4", "GETQUOTAROOT nothere")[-1].startswith(b"a4 NO [NONEXISTENT]")
    c.cmd("a5", "CREATE Archive")
    assert c.cmd("a6", "GETQUOTAROOT Archive")[0] == b'* QUOTAROOT "Archive" ""'  # one root for all mailboxes


def test_quota_counts_every_mailbox_and_bob_sees_only_his(srv, store):
    store.set_quota("alice@example.test", 1 << 20)
    store.set_quota("bob@example.test", 1 << 20)
    srv.deliver("alice@example.test", make_message("in inbox", body="a" * 5000))
    srv.deliver("alice@example.test", make_message("in junk", body="b" * 5000), mailbox="Junk")
    alice, bob = session(srv), session(srv, "bob")
    a = alice.cmd("a1", 'GETQUOTA ""')[0]
    assert a.startswith(b'* QUOTA "" (STORAGE ') and int(a.split()[4]) >= 10
    assert bob.cmd("b1", 'GETQUOTA ""')[0] == b'* QUOTA "" (STORAGE 0 1024)'


def test_status_deleted_and_deleted_storage(srv):
    for i in range(3):
        srv.deliver("alice@example.test", make_message(f"m{i}", body="y" * (2000 * (i + 1))))
    c = session(srv)
    assert c.cmd("a1", "STATUS INBOX (DELETED DELETED-STORAGE)")[0] == b'* STATUS "INBOX" (DELETED 0 DELETED-STORAGE 0)'
    c.cmd("a2", "SELECT INBOX")
    c.cmd("a3", "STORE 2:3 +FLAGS.SILENT (\\Deleted)")
    sizes = c.cmd("a4", "FETCH 2:3 (RFC822.SIZE)")
    octets = sum(int(ln.split(b"RFC822.SIZE ")[1].rstrip(b")")) for ln in sizes if ln.startswith(b"* "))
    line = c.cmd("a5", "STATUS INBOX (MESSAGES DELETED DELETED-STORAGE)")[0]
    assert line == b'* STATUS "INBOX" (MESSAGES 3 DELETED 2 DELETED-STORAGE %d)' % -(-octets // 1024)
    listed = c.cmd("a6", 'LIST "" INBOX RETURN (STATUS (DELETED))')
    assert b'* STATUS "INBOX" (DELETED 2)' in listed
    assert c.cmd("a7", "STATUS nothere (DELETED)")[-1].startswith(b"a7 NO [NONEXISTENT]")


def test_append_past_the_quota_is_refused_and_imaplib_reads_the_quota(srv, store):
    store.set_quota("alice@example.test", 4096)
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    m.login("alice@example.test", "alice-pw")
    typ, data = m.getquotaroot("INBOX")
    assert typ == "OK" and data[0] == [b'"INBOX" ""'] and data[1] == [b'"" (STORAGE 0 4)']
    typ, data = m.append("INBOX", None, None, make_message("big", body="z" * 8000))
    assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), data
    m.logout()
