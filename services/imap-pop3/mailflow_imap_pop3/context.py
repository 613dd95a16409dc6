"""What every session of this process shares: settings, the store, logins, push, TLS, the live sessions."""

from __future__ import annotations

import itertools
import ssl
from dataclasses import dataclass, field

from mailflow.store.api import Mailboxes
from mailflow_imap_pop3.auth import Authenticator
from mailflow_imap_pop3.push import Hub
from mailflow_imap_pop3.settings import Settings

_ids = itertools.count(1)


def session_id(prefix: str) -> str:
    return f"{prefix}{next(_ids):x}"


@dataclass
class Context:
    settings: Settings
    store: Mailboxes
    auth: Authenticator
    hub: Hub
    tls: ssl.SSLContext | None = None  # for STARTTLS/STLS and the implicit-TLS listeners; None: no TLS
    sessions: set = field(default_factory=set)  # live sessions (IMAP and POP3): the drain, revocations
    stopping: bool = False
    pop3_tokens: set = field(default_factory=set)  # store session tokens of live POP3 sessions here
