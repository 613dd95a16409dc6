"""The peers `make bench` compares with: a throwaway Postfix + Dovecot (tests/bench/peers).

Mail sent to Postfix over SMTP is read back from Dovecot over IMAP and POP3 (so end-to-end latency
means the same for the peers as for Mailflow); no relaying; Dovecot restarts in its other login mode
with the mail kept; `stop` ends every process of both by PID and removes the directory. Needs Debian's
postfix, dovecot-imapd and dovecot-pop3d and root (skipped with the reason otherwise).
"""

from __future__ import annotations

import imaplib
import json
import poplib
import smtplib
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.bench.common import ROOT
from tests.bench.peers import Peers, missing
from tests.support import wait_for
from tests.support.daemons import alive

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing()), reason="the peers need " + ", ".join(missing())),
]


def message(subject: str) -> bytes:
    m = EmailMessage()
    m["From"] = "carol@elsewhere.test"
    m["To"] = "user1@bench.test"
    m["Subject"] = subject
    m.set_content("Hello, Dovecot.\n")
    return m.as_bytes().replace(b"\n", b"\r\n")


def imap_search(peers: Peers, user: str, subject: str) -> list[bytes]:
    with imaplib.IMAP4(peers.ports.host, peers.ports.imap, timeout=30) as c:
        c.login(user, "pw")
        c.select("INBOX")
        return c.uid("SEARCH", "SUBJECT", f'"{subject}"')[1][0].split()


def test_mail_to_postfix_is_read_from_dovecot_and_everything_stops_by_pid():
    peers = Peers(users=3).start()
    try:
        pids = [peers.postfix.pid, peers.dovecot.pid]
        assert all(pid and alive(pid) for pid in pids)
        with smtplib.SMTP(peers.ports.host, peers.ports.smtp, timeout=30) as s:
            s.sendmail("carol@elsewhere.test", ["user1@bench.test"], message("peer one"))
            with pytest.raises(smtplib.SMTPRecipientsRefused):  # nothing is relayed, even from loopback
                s.sendmail("carol@elsewhere.test", ["x@elsewhere.test"], message("relay"))
            with pytest.raises(smtplib.SMTPRecipientsRefused):  # only the configured users exist
                s.sendmail("carol@elsewhere.test", ["user7@bench.test"], message("nobody"))
        wait_for(lambda: imap_search(peers, "user1", "peer one"), timeout=30, what="the message in Dovecot")
        assert peers.delivered() == 1
        p = poplib.POP3(peers.ports.host, peers.ports.pop3, timeout=30)
        p.user("user1")
        p.pass_("pw")
        assert b"Subject: peer one" in b"\r\n".join(p.retr(1)[1])
        p.quit()

        peers.restart_dovecot("performance")
        assert imap_search(peers, "user1", "peer one")  # same mailboxes, new login processes
        assert not alive(pids[1]) and peers.dovecot.pid != pids[1]
        pids.append(peers.dovecot.pid)
        pids += descendants(peers.postfix.pid) + descendants(peers.dovecot.pid)
        assert len(pids) > 4  # Postfix's qmgr and pickup, Dovecot's anvil, log, config, ...
    finally:
        peers.stop()
    assert [pid for pid in pids if alive(pid)] == []
    assert not peers.root.exists()


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def test_up_and_down_by_hand():
    up = subprocess.run([sys.executable, "-m", "tests.bench.peers", "up", "--users", "2"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert up.returncode == 0, up.stderr
    ports = json.loads(up.stdout)
    root = Path(ports["dir"])
    try:
        with imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=30) as c:
            c.login("user0", "pw")
    finally:
        down = subprocess.run([sys.executable, "-m", "tests.bench.peers", "down", "--dir", str(root)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert not alive(ports["postfix_pid"]) and not alive(ports["dovecot_pid"])
    assert not root.exists()


def test_a_directory_of_other_files_is_neither_used_nor_removed(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="other files"):
        Peers(users=1, root=tmp_path).start()
    Peers(users=1, root=tmp_path).stop()
    assert (tmp_path / "keep.txt").read_text() == "mine"
