"""Script commands: HAVESPACE, PUTSCRIPT, CHECKSCRIPT, LISTSCRIPTS, SETACTIVE, GETSCRIPT, DELETESCRIPT,
RENAMESCRIPT (RFC 5804 §2.3, §2.5-2.12).

The store keeps the scripts (mailflow.store.api.SieveScripts, scoped to the session's user). PUTSCRIPT
and CHECKSCRIPT check the script with mailflow.sieve.script.compile, the parser and checks delivery
runs it with: a script that does not parse, or requires an extension we do not run, is NO with the
parser's text ("line 3: ..."), and is not stored. Store errors become replies in session.to_reply;
DELETESCRIPT of the active script is NO (ACTIVE), RENAMESCRIPT onto a name in use NO (ALREADYEXISTS).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mailflow.errors import Conflict
from mailflow.sieve.script import SieveError, compile
from mailflow_imap_pop3.managesieve import responses as rsp
from mailflow_imap_pop3.managesieve.parser import Command
from mailflow_imap_pop3.managesieve.responses import Reply

if TYPE_CHECKING:
    from mailflow_imap_pop3.managesieve.session import Session


async def _check(s: Session, script: bytes) -> Reply | None:
    """NO with the parser's text for a script we would not run; None for one we would. Parsed in a
    thread: a 64 KiB script takes some tens of milliseconds, which other sessions need not wait for."""
    try:
        await asyncio.to_thread(compile, script, s.ctx.settings.managesieve_max_script_bytes)
    except SieveError as exc:
        return Reply("NO", str(exc)[:500])
    return None


async def cmd_havespace(s: Session, cmd: Command) -> Reply | None:
    cmd.arity(2)
    await s.store.have_space(s.principal, cmd.string(0, "a script name"), cmd.number(1, "a size"))
    return Reply("OK", "Putscript would succeed")


async def cmd_putscript(s: Session, cmd: Command) -> Reply | None:
    cmd.arity(2)
    name = cmd.string(0, "a script name")
    script = cmd.args[1]
    refused = await _check(s, script)
    if refused is not None:
        return refused
    await s.store.put_script(s.principal, name, script)
    return Reply("OK", "Script stored")


async def cmd_checkscript(s: Session, cmd: Command) -> Reply | None:
    cmd.arity(1)
    return await _check(s, cmd.args[0]) or Reply("OK", "Script is valid")


async def cmd_listscripts(s: Session, cmd: Command) -> Reply | None:
    cmd.arity(0)
    for name, active in await s.store.list_scripts(s.principal):
        s.write(rsp.string(name) + (b" ACTIVE" if active else b"") + b"\r\n")
    return Reply("OK", "Listscripts completed")


async def cmd_setactive(s: Session, cmd: Command) -> Reply | None:
    cmd.arity(1)
    await s.store.set_active(s.principal, cmd.string(0, "a script name"))
    return Reply("OK", "Active script set")


async def cmd_getscript(s: Session, cmd: Command) -> Reply | None:
    cmd.arity(1)
    script = await s.store.get_script(s.principal, cmd.string(0, "a script name"))
    s.write(b"{%d}\r\n" % len(script) + script + b"\r\n")
    return Reply("OK", "Getscript completed")


async def cmd_deletescript(s: Session, cmd: Command) -> Reply | None:
    cmd.arity(1)
    try:
        await s.store.delete_script(s.principal, cmd.string(0, "a script name"))
    except Conflict:
        return Reply("NO", "The active script cannot be deleted", "ACTIVE")
    return Reply("OK", "Script deleted")


async def cmd_renamescript(s: Session, cmd: Command) -> Reply | None:
    cmd.arity(2)
    try:
        await s.store.rename_script(s.principal, cmd.string(0, "the old name"), cmd.string(1, "the new name"))
    except Conflict:
        return Reply("NO", "A script of that name exists", "ALREADYEXISTS")
    return Reply("OK", "Script renamed")
