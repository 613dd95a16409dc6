"""What a session knows: where the dialogue is (`State`), who the client is (`Client`) and the mail
transaction under way (`Transaction`). Plain data, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

from mailflow.contracts.messages import ClientInfo, Recipient
from mailflow.store.api import Principal
from mailflow_smtp_ingress.parser import MailParams
from mailflow_smtp_ingress.replies import Reply

Listener = Literal["mx", "submission", "smtps"]


class State(enum.Flag):
    """Where the dialogue is (RFC 5321 §4.1.4). Authentication is `Client.principal`, apart from it."""

    GREETED = enum.auto()  # 220 sent (or TLS just started): HELO/EHLO first
    READY = enum.auto()  # HELO/EHLO said, no transaction
    MAIL = enum.auto()  # MAIL FROM taken, no recipient yet
    RCPT = enum.auto()  # one recipient or more taken
    BDAT = enum.auto()  # chunks of the message coming (RFC 3030)
    DATA = enum.auto()  # message octets being read (after 354, or a BDAT's): no command now

    # Members are singletons: hash them by identity, in C (Enum's own hash runs Python code on every
    # lookup of the state in a Spec's `allowed`, once per command).
    __hash__ = object.__hash__


ANY = State.GREETED | State.READY | State.MAIL | State.RCPT | State.BDAT
TRANSACTION = State.MAIL | State.RCPT | State.BDAT | State.DATA


@dataclass
class Client:
    session_id: str
    listener: Listener
    ip: str  # the real client: from the PROXY header when there is one, else the socket's peer
    port: int = 0
    helo: str = ""  # sanitized HELO/EHLO argument; "" until given (and again after STARTTLS)
    esmtp: bool = False
    tls: str | None = None  # "TLSv1.3 TLS_AES_256_GCM_SHA384" once TLS is up
    principal: Principal | None = None  # set by a successful AUTH
    auth_checked: float = 0.0  # time.monotonic() when the store last confirmed `principal`

    @property
    def submission(self) -> bool:
        return self.listener in ("submission", "smtps")

    def info(self) -> ClientInfo:
        """The contract's ClientInfo, rebuilt only when HELO, TLS or AUTH changed (one model per session)."""
        p = self.principal
        key = (self.helo, self.tls, p.address if p else None, self.ip, self.port)
        cached = self.__dict__.get("_info")
        if cached is None or cached[0] != key:
            info = ClientInfo(
                ip=self.ip,
                port=self.port,
                helo=self.helo,
                listener=self.listener,
                auth_user=key[2],
                tls=self.tls,
            )
            self.__dict__["_info"] = cached = (key, info)
        return cached[1]


@dataclass
class Transaction:
    mail_from: str  # "" is the null reverse-path
    params: MailParams
    rcpts: list[Recipient] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)  # BDAT
    size: int = 0  # BDAT bytes so far
    failed: Reply | None = None  # BDAT: an earlier chunk failed; the rest is read and dropped
    forwards: list[Recipient] = field(default_factory=list)  # accepted aliases' targets in other domains
    forward_only: set[str] = field(default_factory=set)  # accepted aliases (lower case) with no local user

    def queued_rcpts(self) -> list[Recipient]:
        """The recipients queued: the client's own, but an alias with no local user (its copies are its
        forwards), then the forwards; the queue keeps the first of an address given twice."""
        own = [r for r in self.rcpts if r.address.lower() not in self.forward_only] if self.forward_only else self.rcpts
        return own + self.forwards if self.forwards else own
