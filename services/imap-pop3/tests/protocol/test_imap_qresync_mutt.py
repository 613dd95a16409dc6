"""A real QRESYNC client: Debian's mutt (2.2, `imap_qresync`, header cache) opens INBOX, quits, and opens it
again after another session flagged one message and expunged another. The second time it resyncs with
UID FETCH (CHANGEDSINCE m VANISHED) (the command log says so) and shows exactly what the server has:
the expunged message gone, the flag there. Driven headless through util-linux's `script`, as in e2e/test_real_clients."""

from __future__ import annotations

import imaplib
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from imaptest import make_message

pytestmark = pytest.mark.skipif(
    not all(shutil.which(p) for p in ("mutt", "script")), reason="needs Debian's mutt and util-linux's script"
)


def mutt(tmp: Path, port: int, keys: str) -> str:
    rc = tmp / "muttrc"
    rc.write_text(
        f"""set folder="imap://alice@example.test@127.0.0.1:{port}/"
set imap_user="alice@example.test"
set imap_pass="alice-pw"
set spoolfile="+INBOX"
set ssl_starttls=no
set ssl_force_tls=no
set wait_key=no
set quit=yes
set pipe_split=yes
set header_cache="{tmp / "hcache"}"
set message_cachedir=""
set imap_condstore=yes
set imap_qresync=yes
set mail_check_stats=no
"""
    )
    env = dict(os.environ, HOME=str(tmp), TERM="vt100")
    cmd = ["script", "-qec", f"mutt -n -F {rc} -e 'push \"{keys}\"'", "/dev/null"]
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=60).stdout


def test_mutt_resyncs_with_qresync(srv, tmp_path, caplog):
    for i in range(5):
        srv.deliver("alice@example.test", make_message(f"msg{i}", body=f"text of msg{i}\n"))
    port = srv.port("imap")
    (tmp_path / "hcache").mkdir()
    mutt(tmp_path, port, "<quit>")  # fills the header cache, with UIDVALIDITY and HIGHESTMODSEQ
    m = imaplib.IMAP4("127.0.0.1", port)
    m.login("alice@example.test", "alice-pw")
    m.select("INBOX")
    m.uid("STORE", "2", "+FLAGS", "(\\Flagged)")
    m.uid("STORE", "3", "+FLAGS", "(\\Deleted)")
    m.expunge()
    m.logout()
    every, flagged = tmp_path / "every.txt", tmp_path / "flagged.txt"
    keys = (
        f"<tag-pattern>~A<enter><tag-prefix><pipe-message>cat >> {every}<enter>"
        f"<untag-pattern>~A<enter><tag-pattern>~F<enter><tag-prefix><pipe-message>cat >> {flagged}<enter><quit>"
    )
    with caplog.at_level(logging.DEBUG, logger="mailflow_imap_pop3"):
        mutt(tmp_path, port, keys)
    commands = [r.getMessage() for r in caplog.records if r.getMessage().startswith("C: ")]
    # mutt's QRESYNC: ENABLE QRESYNC, SELECT (CONDSTORE), then UID FETCH of its cached UIDs with
    # (CHANGEDSINCE <cached HIGHESTMODSEQ> VANISHED); no header of the old messages is fetched again
    assert any(c.endswith("ENABLE QRESYNC") for c in commands), commands
    assert any(" UID FETCH 1:5 (FLAGS) (CHANGEDSINCE " in c and c.endswith(" VANISHED)") for c in commands), (
        commands
    )
    assert not any("HEADER" in c for c in commands), commands
    text = every.read_text()
    assert [f"text of msg{i}" in text for i in range(5)] == [True, True, False, True, True]
    assert "text of msg1" in flagged.read_text() and "msg0" not in flagged.read_text()
