"""Access for imap-pop3: every Mailboxes call of mailflow.store.api, scoped to the session's user."""

from __future__ import annotations

from mailflow_mailbox_store.service import StoreCore


class Store(StoreCore):
    pass
