"""The peers' Dovecot: IMAP and POP3 on loopback ports, over the Maildirs the peers' Postfix fills.

A private instance (`dovecot -c <dir>/dovecot.conf`, its own base_dir, state and log under <dir>):
passwd-file users with a plaintext password, each with home <mail>/<user> and mail in ~/Maildir, owned
by the mail owner; no TLS (loopback only), plaintext LOGIN allowed. Login mode "stock" is Debian's
default (one login process per connection); "performance" is Dovecot's high-performance mode (login
processes serve many connections, one kept ready per core). Started by its own command with its
standard streams detached (Dovecot keeps them open); stopped by its master's PID (tests.support.daemons). If IMAP
and POP3 do not greet within the timeout, `start` raises RuntimeError with the log's tail.
"""

from __future__ import annotations

import grp
import os
import subprocess
from pathlib import Path

from tests.support.daemons import greets, read_pid, stop_pid, wait_until


class Dovecot:
    def __init__(self, root: Path, host: str, imap_port: int, pop3_port: int, users: list[str], password: str,
                 mail: Path, vmail_uid: int, login_mode: str = "stock"):  # fmt: skip
        if login_mode not in ("stock", "performance"):
            raise ValueError(f"login mode {login_mode!r}: stock or performance")
        self.root, self.host, self.imap_port, self.pop3_port = root, host, imap_port, pop3_port
        self.users, self.password, self.mail, self.vmail_uid = users, password, mail, vmail_uid
        self.login_mode = login_mode

    def conf(self) -> str:
        login = (
            f"service_count = 0\n  process_min_avail = {os.cpu_count() or 1}\n"
            if self.login_mode == "performance"
            else ""
        )
        return f"""\
base_dir = {self.root / "run"}
state_dir = {self.root / "state"}
instance_name = mailflow-peers-{self.imap_port}
log_path = {self.root / "dovecot.log"}
hostname = dovecot.bench.test
protocols = imap pop3
listen = {self.host}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 1000
passdb {{
  driver = passwd-file
  args = {self.root / "users"}
}}
userdb {{
  driver = passwd-file
  args = {self.root / "users"}
}}
service imap-login {{
  {login}
  inet_listener imap {{
    address = {self.host}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  {login}
  inet_listener pop3 {{
    address = {self.host}
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""

    def write_config(self) -> None:
        for d in (self.root / "run", self.root / "state"):
            d.mkdir(parents=True, exist_ok=True)
        users = self.root / "users"
        uid = self.vmail_uid
        users.write_text(
            "".join(f"{u}:{{PLAIN}}{self.password}:{uid}:{uid}::{self.mail / u}\n" for u in self.users)
        )
        os.chown(users, 0, grp.getgrnam("dovecot").gr_gid)  # read by the auth process
        users.chmod(0o640)
        (self.root / "dovecot.conf").write_text(self.conf())

    @property
    def pid(self) -> int | None:
        return read_pid(self.root / "run" / "master.pid")

    def start(self, timeout: float = 30.0) -> None:
        self.write_config()
        with open(self.root / "start.log", "wb") as out:
            started = subprocess.run(["dovecot", "-c", str(self.root / "dovecot.conf")], stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=out, timeout=60, check=False)  # fmt: skip
        try:
            if started.returncode != 0:
                raise TimeoutError
            wait_until(
                lambda: (
                    self.pid
                    and greets(self.host, self.imap_port, b"* OK")
                    and greets(self.host, self.pop3_port, b"+OK")
                ),
                timeout,
                "Dovecot",
            )
        except TimeoutError:
            raise RuntimeError(f"Dovecot did not start: {self.log()[-2000:]}") from None

    def stop(self) -> None:
        stop_pid(self.pid)

    def log(self) -> str:
        out = []
        for name in ("start.log", "dovecot.log"):
            try:
                out.append((self.root / name).read_text(errors="replace"))
            except OSError:
                pass
        return "\n".join(out)
