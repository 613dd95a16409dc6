"""A private Postfix instance (Debian's `postfix` package), the base of every Postfix the tests and
benchmarks start: the course's foreign MTA (tests/e2e/postfix.py), the peers' receiver
(tests/bench/peers/postfix.py) and the TLS sink (tests/bench/tls_sink.py).

Everything lives under one world-traversable folder (Postfix's daemons run as the postfix user): its
own main.cf and master.cf (chroot off), queue and log (`<root>/maillog`). Started with
`postfix -c <root>/etc start`, which detaches, so it is watched through its master's PID file and
stopped by that PID (tests.support.daemons). A subclass gives the part of main.cf that makes it what
it is (`settings`) and any files that part names (`write_files`). If it does not greet within the
timeout, `start` raises RuntimeError with `postfix check`'s complaints and the log's tail. Needs root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.daemons import greets, read_pid, stop_pid, wait_until

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


class PrivatePostfix:
    name = "Postfix"  # in error messages

    def __init__(self, host: str, port: int, root: Path | None = None):
        """`root`: a folder of the caller's (kept at stop), or None for a temporary one (removed at stop)."""
        self.host, self.port = host, port
        self.own_root = root is None
        self.root = root if root is not None else Path(tempfile.mkdtemp(prefix="mailflow-postfix-"))
        if self.own_root:
            self.root.chmod(0o755)
        self.etc, self.queue = self.root / "etc", self.root / "queue"

    def settings(self) -> str:
        """main.cf's lines after the ones every private instance has."""
        raise NotImplementedError

    def write_files(self) -> None:
        """The files `settings` names (maps, keys), in `etc` or under `root`."""

    def master_cf(self) -> str:
        return MASTER_CF.format(listen=f"{self.host}:{self.port}")

    def main_cf(self) -> str:
        return f"""\
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.root / "data"}
maillog_file = {self.root / "maillog"}
maillog_file_prefixes = {self.root}
mail_owner = postfix
setgid_group = postdrop
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
relayhost =
alias_maps =
alias_database =
biff = no
smtpd_banner = $myhostname ESMTP
""" + self.settings()

    def write_config(self) -> None:
        for d in (self.etc, self.queue, self.root / "data"):
            d.mkdir(parents=True, exist_ok=True)
        os.chown(self.root / "data", pwd.getpwnam("postfix").pw_uid, -1)
        self.write_files()
        (self.etc / "main.cf").write_text(self.main_cf())
        (self.etc / "master.cf").write_text(self.master_cf())

    @property
    def pid(self) -> int | None:
        return read_pid(self.queue / "pid" / "master.pid")

    def start(self, timeout: float = 30.0):
        self.write_config()
        subprocess.run(["postfix", "-c", str(self.etc), "start"], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60, check=False)  # fmt: skip
        try:
            wait_until(lambda: self.pid and greets(self.host, self.port, b"220"), timeout, self.name)
        except TimeoutError:
            check = subprocess.run(["postfix", "-c", str(self.etc), "check"], capture_output=True, text=True, timeout=60)
            raise RuntimeError(f"{self.name} did not start: {check.stderr}\n{self.log()[-2000:]}") from None
        return self

    def stop(self) -> None:
        try:
            stop_pid(self.pid)
        finally:
            if self.own_root:
                shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        try:
            return (self.root / "maillog").read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
