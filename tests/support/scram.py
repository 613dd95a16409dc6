"""A SCRAM-SHA-256[-PLUS] client for the protocol tests, computed independently of mailflow.scram: scramp
(its own RFC 5802 code), with the channel binding data taken from the client's side of the TLS
connection (RFC 5929 §4.1: SHA-256 of the server certificate as the client received it; tls-unique from
the client's own TLS state)."""

from __future__ import annotations

import base64
import hashlib
import ssl

import scramp


def end_point(sock: ssl.SSLSocket) -> tuple[str, bytes]:
    """tls-server-end-point of the certificate this client was served (ours are signed with SHA-256)."""
    return "tls-server-end-point", hashlib.sha256(sock.getpeercert(binary_form=True)).digest()


def unique(sock: ssl.SSLSocket) -> tuple[str, bytes]:
    return "tls-unique", sock.get_channel_binding("tls-unique")


class Client:
    """One exchange: `first()`, `final(server_first)`, `check(server_final)` on raw or base64 text."""

    def __init__(self, user: str, password: str, binding: tuple[str, bytes] | None = None, plus: bool | None = None):
        plus = binding is not None if plus is None else plus
        mechanism = "SCRAM-SHA-256-PLUS" if plus else "SCRAM-SHA-256"
        self.c = scramp.ScramClient([mechanism], user, password, binding)
        self.mechanism = mechanism

    def first(self) -> str:
        return b64(self.c.get_client_first())

    def final(self, server_first: str | bytes) -> str:
        self.c.set_server_first(unb64(server_first))
        return b64(self.c.get_client_final())

    def check(self, server_final: str | bytes) -> None:
        """Raises unless the server proved it knows the verifier."""
        self.c.set_server_final(unb64(server_final))

    def authobject(self):
        """For imaplib.authenticate / smtplib.auth: decoded challenges in, text responses out."""
        steps = iter((self.c.get_client_first, self._final, self._check))

        def answer(challenge: bytes | None = None) -> str:
            step = next(steps)
            return step(challenge) if challenge else step()

        return answer

    def _final(self, challenge: bytes) -> str:
        self.c.set_server_first(challenge.decode())
        return self.c.get_client_final()

    def _check(self, challenge: bytes) -> str:
        self.c.set_server_final(challenge.decode())
        return ""


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str | bytes) -> str:
    return base64.b64decode(text).decode()
