"""QUOTA (RFC 9208): GETQUOTA and GETQUOTAROOT over the store's one quota per user.

Every mailbox of a user is under one quota root, named "" (as Dovecot's default, the name clients
meet most), with one resource, STORAGE, in units of 1024 octets: the usage rounded up, the limit
rounded down, so a client never sees more room than there is. A user with no limit is under no quota
root: GETQUOTAROOT names none and sends no QUOTA line, and GETQUOTA "" answers NO [NONEXISTENT], as
for any other root name. SETQUOTA is not offered (no QUOTASET capability): limits are the
administrator's (`mailflow admin users quota`), and the command is unknown to the parser.

A store that cannot answer gives the usual NO [UNAVAILABLE] (errors.to_reply); GETQUOTAROOT of a
mailbox that does not exist is NO [NONEXISTENT] (RFC 9208 §4.3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailflow.store.api import QuotaUse
from mailflow_imap_pop3.imap import responses as rsp
from mailflow_imap_pop3.imap.responses import Reply
from mailflow_imap_pop3.imap.syntax import Command, MailboxArg, QuotaRootArg

if TYPE_CHECKING:
    from mailflow_imap_pop3.imap.session import Session

ROOT = ""  # the one quota root of a user


def quota_units(octets: int) -> int:
    """Octets as RFC 9208's STORAGE counts them (units of 1024 octets), rounded up."""
    return -(-octets // 1024)


def quota_line(q: QuotaUse) -> bytes:
    assert q.limit_bytes is not None
    return b"* QUOTA " + rsp.string(ROOT) + b" (STORAGE %d %d)\r\n" % (quota_units(q.used_bytes), q.limit_bytes // 1024)


async def cmd_getquota(s: Session, cmd: Command) -> Reply | None:
    args: QuotaRootArg = cmd.args
    q = await s.store.quota(s.principal)
    if args.root != ROOT or q.limit_bytes is None:
        return Reply("NO", "No such quota root", "NONEXISTENT")
    s.write(quota_line(q))
    return None


async def cmd_getquotaroot(s: Session, cmd: Command) -> Reply | None:
    args: MailboxArg = cmd.args
    await s.store.status(s.principal, args.mailbox)  # NotFound -> NO [NONEXISTENT]
    q = await s.store.quota(s.principal)
    roots = b"" if q.limit_bytes is None else b" " + rsp.string(ROOT)
    s.write(b"* QUOTAROOT " + rsp.mailbox(args.mailbox, s.rev2) + roots + b"\r\n")
    if q.limit_bytes is not None:
        s.write(quota_line(q))
    return None

