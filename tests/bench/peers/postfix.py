"""The peers' Postfix: SMTP on one loopback port, receiving for one domain into Maildirs.

A private instance (`postfix -c <dir>/etc start`) with its own queue and log under <dir>: the
`virtual` agent delivers user<i>@<domain> to <mail>/user<i>/Maildir/ as the mail owner; every other
destination is refused (no relaying, even from loopback), nothing is sent out, nothing is looked up
in DNS. Started by its own command; stopped by its master's PID (tests.support.postfix). If it does not greet
within the timeout, `start` raises RuntimeError with `postfix check`'s complaints and the log's tail.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.postfix import PrivatePostfix


class Postfix(PrivatePostfix):
    def __init__(
        self, root: Path, host: str, port: int, domain: str, users: list[str], mail: Path, vmail_uid: int
    ):
        super().__init__(host, port, root)
        self.domain, self.users, self.mail, self.vmail_uid = domain, users, mail, vmail_uid

    def write_files(self) -> None:
        (self.etc / "vmailbox").write_text("".join(f"{u}@{self.domain} {u}/Maildir/\n" for u in self.users))

    def settings(self) -> str:
        return f"""\
myhostname = postfix.{self.domain}
mydomain = {self.domain}
myorigin = $myhostname
mydestination =
inet_interfaces = {self.host}
inet_protocols = ipv4
mynetworks = {self.host}/32
default_transport = error:the peer bench sends nothing out
relay_transport = error:the peer bench sends nothing out
local_transport = error:the peer bench has no local users
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = reject_unauth_destination
virtual_mailbox_domains = {self.domain}
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = texthash:{self.etc / "vmailbox"}
virtual_uid_maps = static:{self.vmail_uid}
virtual_gid_maps = static:{self.vmail_uid}
virtual_minimum_uid = 1000
"""
