"""A receiving MTA that takes mail only over STARTTLS and keeps none of it: Postfix's smtpd in front of
Postfix's `smtp-sink`, for benchmarks of delivery over TLS (bench_tls).

`smtp-sink` (C) answers 250 to everything but speaks no TLS. Here a private Postfix instance (`postfix
-c <dir>/etc start`, tests.support.postfix) listens on host:port with the certificate and key
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
import shutil
import subprocess
from pathlib import Path

from tests.support.daemons import greets, wait_until
from tests.support.postfix import PrivatePostfix

TLS_LINE = " TLS connection established from "  # smtpd_tls_loglevel 1: one per handshake


def available() -> bool:
    return os.geteuid() == 0 and all(shutil.which(t) for t in ("postfix", "smtp-sink"))


class TlsSink(PrivatePostfix):
    name = "Postfix smtpd"

    def __init__(self, host: str, port: int, sink_port: int, domains: list[str], cert: Path, key: Path):
        super().__init__(host, port)
        self.sink_port, self.domains, self.cert, self.key = sink_port, domains, cert, key
        self.sink: subprocess.Popen | None = None

    def settings(self) -> str:
        return f"""\
myhostname = tls-sink.test
mydestination =
inet_interfaces = {self.host}
inet_protocols = ipv4
mynetworks =
default_transport = error:the TLS sink sends nothing out
local_transport = error:the TLS sink has no local users
relay_domains = {" ".join(self.domains)}
smtpd_relay_restrictions = reject_unauth_destination
smtpd_proxy_filter = 127.0.0.1:{self.sink_port}
smtpd_tls_chain_files = {self.key}, {self.cert}
smtpd_tls_security_level = encrypt
smtpd_tls_loglevel = 1
smtpd_client_connection_count_limit = 0
"""

    def write_files(self) -> None:
        for path in (self.cert, self.key):  # smtpd reads them as root at startup; a copy of its own
            (self.etc / path.name).write_bytes(path.read_bytes())
            (self.etc / path.name).chmod(0o600)
        self.cert, self.key = self.etc / self.cert.name, self.etc / self.key.name

    def master_cf(self) -> str:
        return super().master_cf() + "tlsmgr    unix - - n 1000? 1 tlsmgr\n"

    def start(self, timeout: float = 30.0) -> TlsSink:
        self.sink = subprocess.Popen(
            [shutil.which("smtp-sink") or "smtp-sink", "-u", "postfix", "-h", "sink.localdomain", f"127.0.0.1:{self.sink_port}", "256"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until(lambda: greets("127.0.0.1", self.sink_port, b"220"), timeout, "smtp-sink")
            super().start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self.sink is not None:
                self.sink.terminate()
                self.sink.wait(10)

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
