"""One SCRAM-SHA-256[-PLUS] login, the same for IMAP AUTHENTICATE, POP3 AUTH and SMTP AUTH: the protocol
gives the client-first message and a way to send a challenge and read the answer; the store checks the
proof (it alone holds the verifier: mailflow.scram).

`authenticate` returns an `Outcome`: the principal, or none with the SCRAM error code of a failure that
the client caused after the store was asked (a wrong password, a user with no verifier yet, an unknown or
disabled user: all "invalid-proof"; a nonce or channel binding that does not match). Those count as
failed logins. A client-first message that cannot be used raises `ScramError` before the store is asked
(an authorization identity of another user raises `AuthzidRefused`: a failed login too). A store that
does not answer raises what the store client raises (ServiceUnavailable); a client that cancels raises
what `ask` raises. The success data (server-final "v=") goes out through `ask` as a last challenge,
whose answer must be empty (RFC 4954 §4, RFC 5034 §4, RFC 3501 §6.2.2).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from mailflow.sasl import SaslError
from mailflow.scram import MECHANISM, MECHANISM_PLUS, ScramError, ServerExchange, server_final
from mailflow.store.api import Principal

Ask = Callable[[bytes], Awaitable[bytes]]  # send a challenge (raw octets), return the decoded answer


class Cancelled(SaslError):
    """The client answered a challenge with "*" (RFC 4954 §4, RFC 5034 §4, RFC 3501 §6.2.2)."""


def mechanisms(bindings: dict[str, bytes]) -> list[str]:
    """The SCRAM mechanisms to advertise on a connection: -PLUS only where it can bind (TLS)."""
    return [MECHANISM, MECHANISM_PLUS] if bindings else [MECHANISM]


class ScramDirectory(Protocol):
    async def scram_start(self, username: str) -> tuple[bytes, int]:
        """(salt, iterations) of the user; made up, but stable, for one with no verifier."""
        ...

    async def scram_finish(
        self, username: str, auth_message: bytes, client_proof: bytes, service: str
    ) -> tuple[Principal, bytes] | None:
        """(principal, server signature) for a proof that checks out, else None."""
        ...


@dataclass(frozen=True)
class Outcome:
    user: str  # the name the client gave, for the log
    principal: Principal | None = None
    error: str | None = None  # the RFC 5802 server-error-value of a failure


async def authenticate(
    exchange: ServerExchange,
    client_first: bytes,
    ask: Ask,
    directory: ScramDirectory,
    service: str,
    username: Callable[[str], str] = str.strip,
) -> Outcome:
    """`username` turns the SCRAM name into the store's (IMAP and POP3 add a default domain)."""
    first = exchange.start(client_first)
    login = username(first.user)
    salt, iterations = await directory.scram_start(login)
    client_final = await ask(exchange.challenge(salt, iterations))
    try:
        auth_message, proof = exchange.finish(client_final)
    except ScramError as exc:
        return Outcome(first.user, error=exc.code)
    result = await directory.scram_finish(login, auth_message, proof, service)
    if result is None:
        return Outcome(first.user, error="invalid-proof")
    principal, signature = result
    if await ask(server_final(signature)):
        raise ScramError("other-error", "the answer to the server-final message must be empty")
    return Outcome(first.user, principal)
