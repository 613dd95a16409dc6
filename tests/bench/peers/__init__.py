"""The peers `make bench` measures beside Mailflow: a throwaway Postfix + Dovecot, stock Debian 12.

    with Peers() as peers:          # Postfix SMTP on 127.0.0.1:<free>, Dovecot IMAP and POP3 likewise
        peers.ports.smtp, peers.ports.imap, peers.ports.pop3

Postfix receives for bench.test (user0..user99, no relaying, nothing sent out, no DNS) and its
`virtual` agent writes each message into <root>/mail/<user>/Maildir, the mailboxes Dovecot serves
(passwd-file users user0..user99, password "pw", plaintext login on loopback): mail sent over SMTP to
Postfix is read back over IMAP or POP3 from Dovecot, so end-to-end latency is measured for the peers
as for Mailflow. Everything lives under one temporary directory and runs as its own instances (own
config, queue, base_dir and PID files), never touching the system's Postfix or Dovecot.

Needs Debian's postfix, dovecot-imapd and dovecot-pop3d and root (both drop privileges themselves);
`missing()` says what is lacking and tests/bench/peers/install.sh installs the packages. `start`
raises RuntimeError with the log's tail if either does not answer within its timeout, after stopping
what it started; `stop` sends SIGTERM to each master process by PID, waits, then SIGKILLs, and removes
the directory. `python -m tests.bench.peers up|down` does the same by hand.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mailflow.stack import free_port
from tests.bench.peers.dovecot import Dovecot
from tests.bench.peers.postfix import Postfix

VMAIL_UID = 5000  # the owner of every mailbox: Postfix's virtual agent writes as it, Dovecot reads as it
DOMAIN = "bench.test"
PASSWORD = "pw"
MARKER = ".mailflow-peers"  # in the peers' directory: `stop` removes only a directory that has it
PROGRAMS = {
    "postfix": "/usr/sbin/postfix",
    "dovecot-imapd": "/usr/lib/dovecot/imap",
    "dovecot-pop3d": "/usr/lib/dovecot/pop3",
}


def missing() -> list[str]:
    """What keeps the peers from running here: packages not installed, or not being root."""
    out = [f"the {pkg} package" for pkg, program in PROGRAMS.items() if not Path(program).exists()]
    if shutil.which("dovecot") is None and "the dovecot-imapd package" not in out:
        out.append("the dovecot-core package")
    if os.geteuid() != 0:
        out.append("root (Postfix and Dovecot start as root and drop privileges)")
    return out


@dataclass
class PeerPorts:
    smtp: int
    imap: int
    pop3: int
    host: str = "127.0.0.1"

    @classmethod
    def free(cls) -> PeerPorts:
        return cls(smtp=free_port(), imap=free_port(), pop3=free_port())


class Peers:
    def __init__(self, users: int = 100, login_mode: str = "stock", root: Path | None = None):
        self.users = [f"user{i}" for i in range(users)]
        self.ports = PeerPorts.free()
        self.root = Path(root) if root else None
        self.login_mode = login_mode
        self.postfix: Postfix | None = None
        self.dovecot: Dovecot | None = None

    @property
    def mail(self) -> Path:
        return self.root / "mail"

    def _servers(self) -> None:
        self.postfix = Postfix(self.root / "postfix", self.ports.host, self.ports.smtp, DOMAIN, self.users,
                               self.mail, VMAIL_UID)  # fmt: skip
        self.dovecot = Dovecot(self.root / "dovecot", self.ports.host, self.ports.imap, self.ports.pop3, self.users,
                               PASSWORD, self.mail, VMAIL_UID, self.login_mode)  # fmt: skip

    def start(self, timeout: float = 30.0) -> Peers:
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="mailflow-peers-"))
        elif any(self.root.iterdir()) and not (self.root / MARKER).exists():
            raise RuntimeError(f"{self.root} holds other files: the peers need a directory of their own")
        (self.root / MARKER).touch()
        # Postfix's and Dovecot's unprivileged processes walk into this directory
        self.root.chmod(0o755)
        self.mail.mkdir(exist_ok=True)
        os.chown(self.mail, VMAIL_UID, VMAIL_UID)
        self._servers()
        try:
            self.postfix.start(timeout)
            self.dovecot.start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def restart_dovecot(self, login_mode: str, timeout: float = 30.0) -> None:
        """Dovecot again with another login mode ("stock" or "performance"); the mail stays."""
        self.login_mode = login_mode
        self.dovecot.stop()
        self.dovecot.login_mode = login_mode
        self.dovecot.start(timeout)

    def stop(self) -> None:
        """Stop both by the PIDs they wrote (also peers started by another process: `Peers(root=D).stop()`)
        and remove the directory."""
        if self.root is None:
            return
        if self.postfix is None:
            self._servers()
        for server in (self.dovecot, self.postfix):
            server.stop()
        if (self.root / MARKER).exists():  # never remove a directory the peers did not make theirs
            shutil.rmtree(self.root, ignore_errors=True)

    def delivered(self) -> int:
        """Messages in the Maildirs: files in every user's new/ and cur/ (what Postfix delivered, and any
        message APPENDed over IMAP)."""
        n = 0
        for user in self.users:
            for sub in ("new", "cur"):
                try:
                    with os.scandir(self.mail / user / "Maildir" / sub) as entries:
                        n += sum(1 for _ in entries)
                except FileNotFoundError:
                    pass
        return n

    def __enter__(self) -> Peers:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
