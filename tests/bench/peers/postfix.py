"""The peers' Postfix: SMTP on one loopback port, receiving for one domain into Maildirs.

A private instance (`postfix -c <dir>/etc start`) with its own queue and log under <dir>: the
`virtual` agent delivers user<i>@<domain> to <mail>/user<i>/Maildir/ as the mail owner; every other
destination is refused (no relaying, even from loopback), nothing is sent out, nothing is looked up
in DNS. Started by its own command; stopped by its master's PID (process.py). If it does not greet
within the timeout, `start` raises RuntimeError with `postfix check`'s complaints and the log's tail.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from tests.bench.peers.process import greets, read_pid, stop_pid, wait_until
from tests.e2e.postfix import MASTER_CF  # the services a delivery-only instance runs, chroot off


class Postfix:
    def __init__(
        self, root: Path, host: str, port: int, domain: str, users: list[str], mail: Path, vmail_uid: int
    ):
        self.root, self.host, self.port, self.domain = root, host, port, domain
        self.users, self.mail, self.vmail_uid = users, mail, vmail_uid
        self.etc, self.queue = root / "etc", root / "queue"

    def main_cf(self) -> str:
        return f"""\
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.root / "data"}
maillog_file = {self.root / "maillog"}
maillog_file_prefixes = {self.root}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.{self.domain}
mydomain = {self.domain}
myorigin = $myhostname
mydestination =
inet_interfaces = {self.host}
inet_protocols = ipv4
mynetworks = {self.host}/32
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
relayhost =
default_transport = error:the peer bench sends nothing out
relay_transport = error:the peer bench sends nothing out
local_transport = error:the peer bench has no local users
alias_maps =
alias_database =
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = reject_unauth_destination
virtual_mailbox_domains = {self.domain}
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = texthash:{self.etc / "vmailbox"}
virtual_uid_maps = static:{self.vmail_uid}
virtual_gid_maps = static:{self.vmail_uid}
virtual_minimum_uid = 1000
biff = no
smtpd_banner = $myhostname ESMTP
"""

    def write_config(self) -> None:
        for d in (self.etc, self.queue, self.root / "data"):
            d.mkdir(parents=True, exist_ok=True)
        os.chown(self.root / "data", pwd.getpwnam("postfix").pw_uid, -1)
        (self.etc / "main.cf").write_text(self.main_cf())
        (self.etc / "master.cf").write_text(MASTER_CF.format(listen=f"{self.host}:{self.port}"))
        (self.etc / "vmailbox").write_text("".join(f"{u}@{self.domain} {u}/Maildir/\n" for u in self.users))

    @property
    def pid(self) -> int | None:
        return read_pid(self.queue / "pid" / "master.pid")

    def start(self, timeout: float = 30.0) -> None:
        self.write_config()
        subprocess.run(["postfix", "-c", str(self.etc), "start"], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60, check=False)  # fmt: skip
        try:
            wait_until(lambda: self.pid and greets(self.host, self.port, b"220"), timeout, "Postfix")
        except TimeoutError:
            check = subprocess.run(
                ["postfix", "-c", str(self.etc), "check"], capture_output=True, text=True, timeout=60
            )
            raise RuntimeError(f"Postfix did not start: {check.stderr}\n{self.log()[-2000:]}") from None

    def stop(self) -> None:
        stop_pid(self.pid)

    def log(self) -> str:
        try:
            return (self.root / "maillog").read_text(errors="replace")
        except OSError:
            return ""
