"""Real mail programs from Debian against the whole stack (mail arrives by SMTP): mbsync (isync) syncs a
mailbox both ways over IMAPS, fetchmail downloads over POP3S and the server copies are gone, mutt lists
and reads over IMAPS in batch mode. Debian packages: isync fetchmail mutt (and util-linux's `script`)."""

from __future__ import annotations

import imaplib
import os
import shutil
import smtplib
import subprocess
from pathlib import Path

import pytest
from imaptest import make_message

from tests.support import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(shutil.which(p) for p in ("mbsync", "fetchmail", "mutt", "script")),
        reason="needs Debian's isync, fetchmail, mutt (apt-get install -y isync fetchmail mutt)",
    ),
]


def send(stack, rcpt: str, *subjects: str) -> None:
    with smtplib.SMTP(stack.ports.host, stack.ports.smtp, timeout=30) as s:
        for subject in subjects:
            s.sendmail(
                "carol@elsewhere.test", [rcpt], make_message(subject, to=rcpt, body=f"text of {subject}\n")
            )


def imap(stack, user: str) -> imaplib.IMAP4:
    m = imaplib.IMAP4(stack.ports.host, stack.ports.imap)
    m.login(f"{user}@example.test", f"{user}-pw")
    return m


def count(stack, user: str, mailbox: str = "INBOX") -> int:
    m = imap(stack, user)
    try:
        typ, data = m.status(mailbox, "(MESSAGES)")
        return int(data[0].split()[-1].rstrip(b")")) if typ == "OK" else -1
    finally:
        m.logout()


def run(cmd: list[str], tmp: Path, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, HOME=str(tmp), TERM="vt100")
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=60, **kw)
    assert proc.returncode == 0, f"{cmd[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def maildir_files(box: Path) -> list[Path]:
    return sorted(p for sub in ("new", "cur") for p in (box / sub).glob("*"))


def subject_of(f: Path) -> bytes:
    return f.read_bytes().split(b"Subject: ", 1)[1].split(b"\n", 1)[0].rstrip(b"\r")


def test_mbsync_syncs_both_ways(stack, tmp_path):
    send(stack, "carol@example.test", "from smtp 1", "from smtp 2")
    wait_for(lambda: count(stack, "carol") == 2, timeout=20, what="2 messages for carol")
    local = tmp_path / "mail"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        f"""IMAPAccount acct
Host localhost
Port {stack.ports.imaps}
User carol@example.test
Pass carol-pw
SSLType IMAPS
CertificateFile {stack.data_dir / "tls" / "cert.pem"}

IMAPStore remote
Account acct

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel ch
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
Sync All
"""
    )
    mbsync = ["mbsync", "-c", str(rc), "-a"]
    run(mbsync, tmp_path)
    files = maildir_files(local / "INBOX")
    assert len(files) == 2 and (local / "Sent").is_dir() and (local / "Trash").is_dir()

    # near -> far: a flag, a new message, a new folder (on "from smtp 1": the two may be stored in either order)
    (first,) = [f for f in files if subject_of(f) == b"from smtp 1"]
    first.rename(local / "INBOX" / "cur" / (first.name.split(":2,")[0] + ":2,FS"))
    (local / "INBOX" / "new" / "local.1").write_bytes(
        make_message("written locally", to="carol@example.test")
    )
    for sub in ("cur", "new", "tmp"):
        (local / "Projects" / sub).mkdir(parents=True)
    (local / "Projects" / "new" / "p.1").write_bytes(make_message("project note", to="carol@example.test"))
    run(mbsync, tmp_path)
    m = imap(stack, "carol")
    m.select("INBOX")
    typ, data = m.search(None, "FLAGGED SEEN")
    assert len(data[0].split()) == 1
    typ, data = m.search(None, 'SUBJECT "written locally"')
    assert len(data[0].split()) == 1
    assert m.status("Projects", "(MESSAGES)")[1] == [b'"Projects" (MESSAGES 1)']

    # far -> near: a flag set by another client, new mail by SMTP, a deletion
    typ, data = m.search(None, 'SUBJECT "from smtp 2"')
    m.store(data[0], "+FLAGS", "(\\Answered)")
    typ, data = m.search(None, 'SUBJECT "written locally"')
    m.store(data[0], "+FLAGS", "(\\Deleted)")
    m.expunge()
    m.logout()
    send(stack, "carol@example.test", "from smtp 3")
    wait_for(lambda: count(stack, "carol") == 3, timeout=20, what="3 messages for carol")
    run(mbsync, tmp_path)
    files = maildir_files(local / "INBOX")
    texts = {subject_of(f): f.name for f in files}
    assert set(texts) == {b"from smtp 1", b"from smtp 2", b"from smtp 3"}
    assert texts[b"from smtp 1"].endswith(":2,FS") and texts[b"from smtp 2"].endswith(":2,R")


def test_fetchmail_downloads_and_removes(stack, tmp_path):
    send(stack, "dave@example.test", "fm 1", "fm 2", "fm 3")
    wait_for(lambda: count(stack, "dave") == 3, timeout=20, what="3 messages for dave")
    out = tmp_path / "fetched.mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"""set no bouncemail
set no syslog
poll localhost service {stack.ports.pop3s} protocol POP3 uidl
  user "dave@example.test" there with password "dave-pw" is "root" here
  ssl sslcertfile "{stack.data_dir / "tls" / "cert.pem"}" sslcertck
  mda "/bin/sh -c 'cat >> {out}'"
  no keep
"""
    )
    rc.chmod(0o600)
    run(["fetchmail", "-f", str(rc), "--nodetach", "--pidfile", str(tmp_path / "fm.pid")], tmp_path)
    got = out.read_bytes()
    assert all(f"Subject: fm {i}".encode() in got for i in (1, 2, 3))
    assert count(stack, "dave") == 0  # the server copies are gone


def test_mutt_lists_and_reads(stack, tmp_path):
    send(stack, "bob@example.test", "for mutt A", "for mutt B")
    wait_for(lambda: count(stack, "bob") >= 2, timeout=20, what="mail for bob")
    certs = tmp_path / "certs"
    shutil.copy(stack.data_dir / "tls" / "cert.pem", certs)
    rc = tmp_path / "muttrc"
    rc.write_text(
        f"""set folder="imaps://bob@example.test@localhost:{stack.ports.imaps}/"
set imap_user="bob@example.test"
set imap_pass="bob-pw"
set spoolfile="+INBOX"
set certificate_file="{certs}"
set wait_key=no
set quit=yes
set pipe_split=yes
set header_cache=""
set message_cachedir=""
"""
    )
    out = tmp_path / "read.txt"
    keys = f"<tag-pattern>~A<enter><tag-prefix><pipe-message>cat >> {out}<enter><quit>"
    screen = run(["script", "-qec", f"mutt -n -F {rc} -e 'push \"{keys}\"'", "/dev/null"], tmp_path).stdout
    assert "for mutt A" in screen and "for mutt B" in screen  # the index listed both
    text = out.read_text()
    assert "text of for mutt A" in text and "text of for mutt B" in text  # and both were read
