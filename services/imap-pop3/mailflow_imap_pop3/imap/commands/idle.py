"""IDLE (RFC 2177): the client waits, the server pushes EXISTS/EXPUNGE/FETCH as the store announces them
(VANISHED instead of EXPUNGE once the session enabled QRESYNC).

The session wakes on a MailboxEvent for its mailbox (push.Hub), asks the store what changed and sends
it at once; nothing waits for a timer. Every `keepalive` seconds an `* OK Still here` keeps NATs and
proxies from dropping the quiet connection. The autologout timer still runs (RFC 3501 §5.4: clients
re-IDLE before 30 minutes). The drain and a revocation of the user's credentials end IDLE with `* BYE`
at once; so does a store that refuses the session. Anything but DONE ends IDLE with BAD. With NOTIFY
(notify.py) IDLE also tells the other mailboxes' news, and MessageNew's FETCH, as they come.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mailflow_imap_pop3.imap import responses as rsp
from mailflow_imap_pop3.imap.commands import notify
from mailflow_imap_pop3.imap.responses import Reply
from mailflow_imap_pop3.imap.syntax import Command

if TYPE_CHECKING:
    from mailflow_imap_pop3.imap.session import Session

KEEPALIVE = 120.0


async def cmd_idle(s: Session, cmd: Command) -> Reply | None:
    from mailflow_imap_pop3.imap.session import State

    loop = asyncio.get_running_loop()
    deadline = loop.time() + s.ctx.settings.idle_timeout
    s.write(rsp.continuation("idling"))
    s.idling = True
    read_task: asyncio.Future | None = None
    try:
        await notify.deliver(s, idle=True)
        await s.conn.flush()
        if s.state == State.LOGOUT:
            return rsp.ANSWERED
        while True:
            try:
                line = s.framer.next_line()
            except ValueError:
                return Reply("BAD", "Expected DONE")
            if line is not None:
                if line.strip().upper() == b"DONE":
                    return Reply("OK", "IDLE terminated")
                return Reply("BAD", "Expected DONE")
            if s.stopping:
                return Reply("BYE", s.bye)
            if read_task is None:
                read_task = asyncio.ensure_future(s.conn.read())
            wake = asyncio.ensure_future(s.wake.wait())
            timeout = max(0.0, min(KEEPALIVE, deadline - loop.time()))
            done, _ = await asyncio.wait(
                {read_task, wake}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not wake.done():
                wake.cancel()
            if read_task in done:
                data = read_task.result() if not read_task.exception() else b""
                read_task = None
                if not data:
                    s.state = State.LOGOUT
                    return rsp.ANSWERED
                s.framer.feed(data)
                continue
            if s.wake.is_set():
                s.wake.clear()
                if s.stopping:
                    return Reply("BYE", s.bye)
                await notify.deliver(s, idle=True)
                await s.conn.flush()
                if s.state == State.LOGOUT:  # sync said BYE (mailbox deleted, session refused)
                    return rsp.ANSWERED
                continue
            if loop.time() >= deadline:
                return Reply("BYE", "Autologout; idle for too long")
            s.write(b"* OK Still here\r\n")
            await s.conn.flush()
    finally:
        s.idling = False
        if read_task is not None:
            read_task.cancel()
