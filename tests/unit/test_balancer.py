"""mailflow.balancer: connections spread over the live backends, a dead one skipped, bytes both ways
with half-close, none alive -> the client's connection is closed."""

from __future__ import annotations

import socket
import socketserver
import threading

from mailflow.balancer import Balancer
from tests.support import free_port


class Echo(socketserver.ThreadingTCPServer):
    """Answers each connection with its name, then echoes until EOF and says bye."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str):
        self.name = name.encode()
        super().__init__(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(self.server.name + b"\n")
        got = b""
        while data := self.request.recv(65536):
            got += data
        self.request.sendall(got + b"bye\n")


def talk(port: int, data: bytes = b"hello\n") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)  # half-close: the backend must see EOF and still answer
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_spreads_connections_and_skips_a_dead_backend():
    a, b = Echo("a"), Echo("b")
    dead = free_port()  # nothing listens there
    front = Balancer("127.0.0.1", free_port(), [a.port, dead, b.port]).start()
    try:
        answers = [talk(front.port) for _ in range(6)]
        assert {x.split(b"\n")[0] for x in answers} == {b"a", b"b"}
        big = b"x" * 300_000 + b"\n"
        assert talk(front.port, big).endswith(big + b"bye\n")
        a.shutdown()
        a.server_close()
        assert {talk(front.port).split(b"\n")[0] for _ in range(4)} == {b"b"}
    finally:
        front.stop()
        b.shutdown()
        b.server_close()


def test_no_backend_alive_closes_the_client():
    front = Balancer("127.0.0.1", free_port(), [free_port(), free_port()]).start()
    try:
        with socket.create_connection(("127.0.0.1", front.port), timeout=5) as s:
            assert s.recv(100) == b""  # closed at once: no replica to take it
    finally:
        front.stop()
