"""A POP3 maildrop lock outlives neither its session nor its replica (issue 16 §3), and no less either.

Two imap-pop3 replicas behind the harness's balancer, the store's lock lasting 5 s and renewed every 1 s:
a session that stays logged in keeps its maildrop locked well past the lock's lifetime (another login
gets -ERR [IN-USE]); when its replica is killed with SIGKILL the lock is no longer renewed, and the
user's next login, which lands on the surviving replica, succeeds within the lifetime and sees all mail.
"""

from __future__ import annotations

import poplib
import smtplib
import time

import pytest

from mailflow.stack import Ports, Stack
from tests.support import wait_for

pytestmark = [pytest.mark.ha, pytest.mark.timeout(300)]

TTL = 5


def login(st: Stack) -> poplib.POP3:
    pop = poplib.POP3(st.ports.host, st.ports.pop3, timeout=10)
    pop.user("pat@pop.test")
    pop.pass_("pw")
    return pop


def test_a_crashed_replicas_maildrop_lock_expires_and_a_live_one_is_kept(tmp_path):
    env = {"MAILFLOW_STORE_POP3_LOCK_TTL": str(TTL), "MAILFLOW_IMAP_POP3_LOCK_RENEW_S": "1"}
    with Stack(tmp_path, Ports.free(), env=env, replicas={"imap-pop3": 2}) as st:
        st.cli("domain", "add", "pop.test")
        st.cli("user", "add", "pat@pop.test", "--password", "pw")
        with smtplib.SMTP(st.ports.host, st.ports.smtp) as s:
            for i in range(3):
                s.sendmail("a@x.test", ["pat@pop.test"], f"Subject: {i}\r\n\r\nhello {i}\r\n".encode())
        wait_for(lambda: login_count(st) == 3, timeout=30, what="three messages")

        st.stop_service("imap-pop3", 1)  # the holder's session goes to replica 0, the one to be killed
        holder = login(st)
        st.start_service("imap-pop3", 1)
        time.sleep(TTL + 2)  # past the lock's lifetime: only the renewals keep it
        with pytest.raises(poplib.error_proto, match=r"IN-USE"):
            login(st)
        assert holder.stat()[0] == 3

        st.kill("imap-pop3", 0)
        killed = time.monotonic()
        pop = wait_for(lambda: try_login(st), timeout=TTL + 10, interval=0.2, what="a login after the crash")
        took = time.monotonic() - killed
        try:
            assert pop.stat()[0] == 3
        finally:
            pop.quit()
        print(f"\npop3: maildrop free again {took:.1f} s after its replica was killed (lock lifetime {TTL} s)")
        assert took < TTL + 3


def login_count(st: Stack) -> int:
    pop = try_login(st)
    if pop is None:
        return -1
    try:
        return pop.stat()[0]
    finally:
        pop.quit()


def try_login(st: Stack) -> poplib.POP3 | None:
    try:
        return login(st)
    except (poplib.error_proto, OSError):
        return None
