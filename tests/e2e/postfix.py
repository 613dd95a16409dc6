"""A throwaway Postfix on a loopback address, private to one test (Debian's `postfix` package).

It receives for `postfix.test` into Maildirs under its folder, and relays `daum.test` to a Mailflow
smtp-ingress named by address and port in a transport map: no DNS anywhere (smtp_dns_support_level
= disabled, bracketed IP next hops). A tests.support.postfix.PrivatePostfix in a temporary folder;
its log is `<dir>/maillog`. Needs root (as CI and the dev machines run).
"""

from __future__ import annotations

import os

from tests.support.postfix import PrivatePostfix, available

__all__ = ["Postfix", "available"]


class Postfix(PrivatePostfix):
    def __init__(self, host: str, port: int, relay_domain: str, relay_to: tuple[str, int], local_domain: str = "postfix.test"):
        super().__init__(host, port)
        self.relay_domain, self.relay_to, self.local_domain = relay_domain, relay_to, local_domain
        self.mail = self.root / "mail"

    def write_files(self) -> None:
        self.mail.mkdir(parents=True, exist_ok=True)
        os.chown(self.mail, 5000, 5000)
        (self.etc / "vmailbox").write_text(f"z@{self.local_domain} z/Maildir/\n")
        host, port = self.relay_to
        (self.etc / "transport").write_text(f"{self.relay_domain} smtp:[{host}]:{port}\n")

    def settings(self) -> str:
        return f"""\
myhostname = mx.{self.local_domain}
mydomain = {self.local_domain}
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
proxy_interfaces = {self.host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtp_tls_security_level = none
smtp_bind_address = {self.host}
default_transport = error:no other destinations here
local_transport = error:no local delivery here
relay_domains = {self.relay_domain}
transport_maps = texthash:{self.etc / "transport"}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = {self.local_domain}
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = texthash:{self.etc / "vmailbox"}
virtual_uid_maps = static:5000
virtual_gid_maps = static:5000
virtual_minimum_uid = 1000
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"""

    def start(self, timeout: float = 20.0) -> Postfix:
        return super().start(timeout)

    def maildir(self, user: str = "z") -> list[bytes]:
        out = []
        for sub in ("new", "cur"):
            d = self.mail / user / "Maildir" / sub
            if d.exists():
                out += [f.read_bytes() for f in sorted(d.iterdir())]
        return out
