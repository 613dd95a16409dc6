"""A throwaway Postfix on a loopback address, private to one test (Debian's `postfix` package).

It receives for `postfix.test` into Maildirs under its folder, and relays `daum.test` to a Mailflow
smtp-ingress named by address and port in a transport map: no DNS anywhere (smtp_dns_support_level
= disabled, bracketed IP next hops). Started with `postfix -c <dir> start`, stopped by
`postfix -c <dir> stop`; its log is `<dir>/maillog`. Needs root (as CI and the dev machines run).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
virtual   unix - n n - - virtual
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def available() -> bool:
    return shutil.which("postfix") is not None and os.geteuid() == 0


class Postfix:
    def __init__(self, host: str, port: int, relay_domain: str, relay_to: tuple[str, int], local_domain: str = "postfix.test"):
        # Its own folder, world-traversable: Postfix's daemons run as the postfix user (and vmail 5000),
        # and a test's tmp_path is private to root.
        self.root = Path(tempfile.mkdtemp(prefix="mailflow-postfix-"))
        self.root.chmod(0o755)
        self.host, self.port = host, port
        self.relay_domain, self.relay_to, self.local_domain = relay_domain, relay_to, local_domain
        self.etc, self.queue, self.mail = self.root / "etc", self.root / "queue", self.root / "mail"

    def write_config(self) -> None:
        uid = pwd.getpwnam("postfix").pw_uid
        for d in (self.etc, self.queue, self.root / "data", self.mail):
            d.mkdir(parents=True, exist_ok=True)
        os.chown(self.root / "data", uid, -1)
        os.chown(self.mail, 5000, 5000)
        (self.etc / "vmailbox").write_text(f"z@{self.local_domain} z/Maildir/\n")
        host, port = self.relay_to
        (self.etc / "transport").write_text(f"{self.relay_domain} smtp:[{host}]:{port}\n")
        (self.etc / "main.cf").write_text(
            f"""compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.root / "data"}
maillog_file = {self.root / "maillog"}
maillog_file_prefixes = {self.root}
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.{self.local_domain}
mydomain = {self.local_domain}
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
proxy_interfaces = {self.host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtp_bind_address = {self.host}
relayhost =
default_transport = error:no other destinations here
local_transport = error:no local delivery here
alias_maps =
alias_database =
relay_domains = {self.relay_domain}
transport_maps = texthash:{self.etc / "transport"}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = {self.local_domain}
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = texthash:{self.etc / "vmailbox"}
virtual_uid_maps = static:5000
virtual_gid_maps = static:5000
virtual_minimum_uid = 1000
biff = no
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
smtpd_banner = $myhostname ESMTP
"""
        )
        (self.etc / "master.cf").write_text(MASTER_CF.format(listen=f"{self.host}:{self.port}"))

    def start(self, timeout: float = 20.0) -> Postfix:
        self.write_config()
        subprocess.run(["postfix", "-c", str(self.etc), "start"], check=False, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
        deadline = time.monotonic() + timeout
        pidfile = self.queue / "pid" / "master.pid"
        while time.monotonic() < deadline:
            if pidfile.exists() and pidfile.read_text().strip():
                import socket

                try:
                    socket.create_connection((self.host, self.port), timeout=0.5).close()
                    return self
                except OSError:
                    pass
            time.sleep(0.1)
        check = subprocess.run(["postfix", "-c", str(self.etc), "check"], capture_output=True, text=True)
        raise RuntimeError(f"postfix did not start: {check.stderr}\n{self.log()[-2000:]}")

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], check=False, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
        pidfile = self.queue / "pid" / "master.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        deadline = time.monotonic() + 10
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        p = self.root / "maillog"
        return p.read_text(errors="replace") if p.exists() else ""

    def maildir(self, user: str = "z") -> list[bytes]:
        out = []
        for sub in ("new", "cur"):
            d = self.mail / user / "Maildir" / sub
            if d.exists():
                out += [f.read_bytes() for f in sorted(d.iterdir())]
        return out

    def __enter__(self) -> Postfix:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
