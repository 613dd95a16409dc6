"""Where mail clients connect: the one table behind the SRV records `mailflow dns records` prints (RFC
6186, RFC 8314 §5.1) and the autoconfiguration smtp-ingress serves (Thunderbird's autoconfig, Outlook's
Autodiscover: mailflow_smtp_ingress/autoconfig.py). The host is MAILFLOW_HOSTNAME; the ports are the
standard ones the containers listen on (mailflow.services), which is what the SRV records publish.

Implicit TLS first (RFC 8314 §3: clients should prefer it), then STARTTLS; IMAP before POP3. Nothing here
fails: it is data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mailflow.services import LISTENERS


@dataclass(frozen=True)
class Endpoint:
    protocol: Literal["imap", "pop3", "smtp"]
    listener: str  # a name of mailflow.services.LISTENERS
    implicit_tls: bool  # TLS from the first octet (RFC 8314), else STARTTLS/STLS before login
    srv: str  # the RFC 6186 / RFC 8314 service label
    priority: int  # of its SRV record: IMAP before POP3 (RFC 6186 §3.4 lets the operator choose)

    @property
    def port(self) -> int:
        return LISTENERS[self.listener][1].port


ENDPOINTS = (
    Endpoint("smtp", "smtps", True, "_submissions._tcp", 0),
    Endpoint("smtp", "submission", False, "_submission._tcp", 0),
    Endpoint("imap", "imaps", True, "_imaps._tcp", 0),
    Endpoint("imap", "imap", False, "_imap._tcp", 0),
    Endpoint("pop3", "pop3s", True, "_pop3s._tcp", 10),
    Endpoint("pop3", "pop3", False, "_pop3._tcp", 10),
)
