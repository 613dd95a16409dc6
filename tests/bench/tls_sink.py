"""A receiving MTA that takes mail only over STARTTLS and keeps none of it: Postfix's smtpd in front of
Postfix's `smtp-sink`, for benchmarks of delivery over TLS (bench_tls).

`smtp-sink` (C) answers 250 to everything but speaks no TLS. Here a private Postfix instance (`postfix
-c <dir>/etc start`, as tests/bench/peers/postfix.py) listens on host:port with the certificate and key
it is given, requires STARTTLS before MAIL (`smtpd_tls_security_level = encrypt`: a session in clear
gets `530 5.7.0` and never delivers), accepts any recipient in `domains`, and hands each transaction
as it arrives to smtp-sink (`smtpd_proxy_filter`: a before-queue proxy, so nothing is written to
Postfix's queue and no queue manager runs): the TLS handshake and the SMTP parsing are Postfix's,
in C, as a real receiver's would be, and nothing else costs CPU. smtpd logs each handshake
(`smtpd_tls_loglevel = 1`): `tls_sessions()` counts them and names the protocol and cipher, so a
benchmark can show that each of its sessions was encrypted.

Needs root and Debian's `postfix` package (`available()`); `start` raises RuntimeError with `postfix
check`'s complaints and the log's tail if it does not greet in time. `stop` ends both daemons by PID.
"""

from __future__ import annotations

import collections
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.bench.peers.process import greets, read_pid, stop_pid, wait_until
from tests.e2e.postfix import MASTER_CF  # the services of a private instance, chroot off

TLS_LINE = " TLS connection established from "  # smtpd_tls_loglevel 1: one per handshake


def available() -> bool:
    return os.geteuid() == 0 and all(shutil.which(t) for t in ("postfix", "smtp-sink"))


class TlsSink:
    def __init__(self, host: str, port: int, sink_port: int, domains: list[str], cert: Path, key: Path):
        self.host, self.port, self.sink_port, self.domains = host, port, sink_port, domains
        self.cert, self.key = cert, key
        # world-traversable: Postfix's daemons run as the postfix user
        self.root = Path(tempfile.mkdtemp(prefix="mailflow-tls-sink-"))
        self.root.chmod(0o755)
        self.etc, self.queue = self.root / "etc", self.root / "queue"
        self.sink: subprocess.Popen | None = None

    def main_cf(self) -> str:
        return f"""\
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.root / "data"}
maillog_file = {self.root / "maillog"}
maillog_file_prefixes = {self.root}
mail_owner = postfix
setgid_group = postdrop
myhostname = tls-sink.test
mydestination =
inet_interfaces = {self.host}
inet_protocols = ipv4
mynetworks =
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
relayhost =
default_transport = error:the TLS sink sends nothing out
local_transport = error:the TLS sink has no local users
alias_maps =
alias_database =
relay_domains = {" ".join(self.domains)}
smtpd_relay_restrictions = reject_unauth_destination
smtpd_proxy_filter = 127.0.0.1:{self.sink_port}
smtpd_tls_chain_files = {self.key}, {self.cert}
smtpd_tls_security_level = encrypt
smtpd_tls_loglevel = 1
smtpd_client_connection_count_limit = 0
biff = no
smtpd_banner = $myhostname ESMTP
"""

    def write_config(self) -> None:
        for d in (self.etc, self.queue, self.root / "data"):
            d.mkdir(parents=True, exist_ok=True)
        os.chown(self.root / "data", pwd.getpwnam("postfix").pw_uid, -1)
        for path in (self.cert, self.key):  # smtpd reads them as root at startup; a copy of its own
            (self.etc / path.name).write_bytes(path.read_bytes())
            (self.etc / path.name).chmod(0o600)
        self.cert, self.key = self.etc / self.cert.name, self.etc / self.key.name
        (self.etc / "main.cf").write_text(self.main_cf())
        master = MASTER_CF.format(listen=f"{self.host}:{self.port}")
        (self.etc / "master.cf").write_text(master + "tlsmgr    unix - - n 1000? 1 tlsmgr\n")

    @property
    def pid(self) -> int | None:
        return read_pid(self.queue / "pid" / "master.pid")

    def start(self, timeout: float = 30.0) -> TlsSink:
        self.write_config()
        self.sink = subprocess.Popen(
            [shutil.which("smtp-sink") or "smtp-sink", "-u", "postfix", "-h", "sink.localdomain", f"127.0.0.1:{self.sink_port}", "256"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until(lambda: greets("127.0.0.1", self.sink_port, b"220"), timeout, "smtp-sink")
            subprocess.run(["postfix", "-c", str(self.etc), "start"], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=60, check=False)  # fmt: skip
            try:
                wait_until(lambda: self.pid and greets(self.host, self.port, b"220"), timeout, "Postfix smtpd")
            except TimeoutError:
                check = subprocess.run(["postfix", "-c", str(self.etc), "check"], capture_output=True, text=True, timeout=60)
                raise RuntimeError(f"Postfix did not start: {check.stderr}\n{self.log()[-2000:]}") from None
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            stop_pid(self.pid)
        finally:
            if self.sink is not None:
                self.sink.terminate()
                self.sink.wait(10)
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> TlsSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        try:
            return (self.root / "maillog").read_text(errors="replace")
        except OSError:
            return ""

    def tls_sessions(self) -> collections.Counter[str]:
        """The TLS handshakes smtpd has logged so far, by "protocol with cipher" (e.g. "TLSv1.3 with
        cipher TLS_AES_256_GCM_SHA384")."""
        out: collections.Counter[str] = collections.Counter()
        for line in self.log().splitlines():
            if TLS_LINE in line:  # "... from unknown[127.0.0.1]: TLSv1.3 with cipher X (256/256 bits) ..."
                out[line.partition(TLS_LINE)[2].partition("]: ")[2].partition(" (")[0]] += 1
        return out

    def cpu_pids(self) -> list[int]:
        """The daemons whose process trees do the receiving: Postfix's master and smtp-sink."""
        return [p for p in (self.pid, self.sink.pid if self.sink else None) if p]
