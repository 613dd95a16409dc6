"""SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 7677 over RFC 5802): the message grammar, the verifier, and
the server's side of one exchange. Pure: no I/O; the store keeps the keys, the protocols move the bytes.

Who does what. A protocol service (IMAP, POP3, SMTP) runs a `ServerExchange`: it parses the client-first
message, asks the store for the user's salt and iteration count, sends the server-first message with a
nonce of its own, parses the client-final message, checks the nonce echo and the channel binding, and
hands the AuthMessage and the proof to the store, which checks them with the `Verifier` it keeps
(`Verifier.check`) and answers with the server signature (`server_final`). The verifier is made wherever
the store learns a password (`Verifier.make`) and never leaves the store.

Failures. Every problem with a client message raises `ScramError` (a `mailflow.sasl.SaslError`), whose
`code` is the RFC 5802 §7 server-error-value (`invalid-encoding`, `extensions-not-supported`,
`channel-bindings-dont-match`, `unsupported-channel-binding-type`, `server-does-support-channel-binding`,
`invalid-username-encoding`, `other-error`, ...) and whose text ("e=<code>: why") is fit for the client
(it never echoes the message). The protocols put it in their failure reply rather than in a
server-final "e=" message (SASL lets a failure carry no additional data; the client learns the code
one round trip sooner). An authorization identity other than the user's own raises `AuthzidRefused`,
as PLAIN does: a failed login, not a syntax error. Messages are bounded (`MAX_MESSAGE` octets) and
split on "," and "=" only: no regular expression ever sees client input.
Channel binding (RFC 5929): `tls-server-end-point` and, on TLS 1.2 only, `tls-unique`; the protocol
says which it can give per connection (`mailflow.tls.channel_bindings`). `tls-exporter` (RFC 9266) is
not available from Python's ssl module.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass

from mailflow.sasl import MAX_IDENTITY, AuthzidRefused, SaslError, decode_base64

MECHANISM = "SCRAM-SHA-256"
MECHANISM_PLUS = "SCRAM-SHA-256-PLUS"
MIN_ITERATIONS = 4096  # RFC 7677 §4: at least 4096
SALT_BYTES = 16
NONCE_BYTES = 18  # 24 base64 characters of our own, after the client's
MAX_NONCE = 256  # the client's part, in characters
MAX_MESSAGE = 4096  # octets of one decoded SCRAM message; a base64 response is at most 4/3 of it
MAX_ENCODED = 4 * ((MAX_MESSAGE + 2) // 3)
PREFIX = "SCRAM-SHA-256$"  # the verifier's stored form: SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>


class ScramError(SaslError):
    """A SCRAM message cannot be accepted; `code` is the RFC 5802 §7 server-error-value."""

    def __init__(self, code: str, text: str):
        super().__init__(f"e={code}: {text}")
        self.code = code


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, code: str = "invalid-encoding") -> bytes:
    if len(text) % 4:
        raise ScramError(code, "not base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ScramError(code, "not base64") from None


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


# --- SASLprep (RFC 4013), for the password: the client runs it before Hi() (RFC 5802 §2.2) ----------------

_PROHIBITED = (
    stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3, stringprep.in_table_c4,
    stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
    stringprep.in_table_c9,
)  # fmt: skip


def saslprep(text: str) -> str:
    """RFC 4013 with unassigned code points allowed (a stored string, RFC 3454 §7); ValueError for a
    prohibited character or a bidirectional string that breaks RFC 3454 §6."""
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    out = unicodedata.normalize("NFKC", mapped)
    for c in out:
        if any(table(c) for table in _PROHIBITED):
            raise ValueError("prohibited character")
    if any(stringprep.in_table_d1(c) for c in out):
        if any(stringprep.in_table_d2(c) for c in out):
            raise ValueError("mixed bidirectional text")
        if not (stringprep.in_table_d1(out[0]) and stringprep.in_table_d1(out[-1])):
            raise ValueError("bidirectional text must start and end right-to-left")
    return out


def normalize_password(password: str) -> bytes:
    """The octets Hi() takes: the SASLprep'd password, or the password as it is when SASLprep refuses it
    (as most servers and clients do, so such a password still works with a client that agrees)."""
    try:
        return saslprep(password).encode("utf-8")
    except ValueError:
        return password.encode("utf-8", "surrogatepass")


# --- the verifier (RFC 5802 §3) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verifier:
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def make(cls, password: str, iterations: int, salt: bytes | None = None) -> Verifier:
        """PBKDF2-HMAC-SHA-256 over the password (milliseconds of CPU: call it from a thread)."""
        salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
        salted = hashlib.pbkdf2_hmac("sha256", normalize_password(password), salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        return cls(salt, iterations, _h(client_key), _hmac(salted, b"Server Key"))

    def encode(self) -> str:
        return (
            f"{PREFIX}{self.iterations}:{_b64(self.salt)}${_b64(self.stored_key)}:{_b64(self.server_key)}"
        )

    @classmethod
    def decode(cls, text: str) -> Verifier:
        """ValueError for anything but the form `encode` writes."""
        if not text.startswith(PREFIX):
            raise ValueError("not a SCRAM-SHA-256 verifier")
        params, _, keys = text[len(PREFIX) :].partition("$")
        iterations, _, salt = params.partition(":")
        stored, _, server = keys.partition(":")
        try:
            out = cls(
                base64.b64decode(salt, validate=True), int(iterations),
                base64.b64decode(stored, validate=True), base64.b64decode(server, validate=True),
            )  # fmt: skip
        except (binascii.Error, ValueError):
            raise ValueError("malformed SCRAM-SHA-256 verifier") from None
        if len(out.stored_key) != 32 or len(out.server_key) != 32 or out.iterations < 1 or not out.salt:
            raise ValueError("malformed SCRAM-SHA-256 verifier")
        return out

    def check(self, auth_message: bytes, client_proof: bytes) -> bool:
        """RFC 5802 §3: ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); H(ClientKey) == StoredKey."""
        if len(client_proof) != len(self.stored_key):
            return False
        signature = _hmac(self.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(client_proof, signature, strict=True))
        return hmac.compare_digest(_h(client_key), self.stored_key)

    def signature(self, auth_message: bytes) -> bytes:
        """ServerSignature = HMAC(ServerKey, AuthMessage): what proves the server to the client."""
        return _hmac(self.server_key, auth_message)


def fake_salt(secret: bytes, login: str) -> bytes:
    """The salt answered for a user with no verifier: the same every time for that name (and in every
    process that shares `secret`), so that asking twice does not tell that the user has none."""
    return _hmac(secret, b"scram fake salt\x00" + login.lower().encode("utf-8", "surrogatepass"))[:SALT_BYTES]


# --- the grammar (RFC 5802 §7) -----------------------------------------------------------------------------


def _text(data: bytes) -> str:
    if len(data) > MAX_MESSAGE:
        raise ScramError("other-error", "SCRAM message too long")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ScramError("invalid-encoding", "SCRAM message is not UTF-8") from None


def _attribute(part: str, name: str) -> str:
    if len(part) < 2 or part[0] != name or part[1] != "=":
        if part[:2] == "m=":
            raise ScramError("extensions-not-supported", "mandatory extensions are not supported")
        raise ScramError("invalid-encoding", f"expected the attribute {name}=")
    return part[2:]


def decode_saslname(text: str) -> str:
    """RFC 5802 §5.1: "=2C" is ",", "=3D" is "="; any other "=" is refused."""
    if "=" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c != "=":
            out.append(c)
            i += 1
        elif text[i : i + 3] == "=2C":
            out.append(",")
            i += 3
        elif text[i : i + 3] == "=3D":
            out.append("=")
            i += 3
        else:
            raise ScramError("invalid-username-encoding", "bad escape in a SCRAM name")
    return "".join(out)


def _nonce(text: str) -> str:
    if not text:
        raise ScramError("invalid-encoding", "empty nonce")
    if len(text) > MAX_NONCE + 4 * ((NONCE_BYTES + 2) // 3):
        raise ScramError("other-error", "nonce too long")
    if any(not ("\x21" <= c <= "\x7e") or c == "," for c in text):  # printable ASCII but ","
        raise ScramError("invalid-encoding", "bad character in the nonce")
    return text


@dataclass(frozen=True)
class ClientFirst:
    flag: str  # "n": no binding; "y": the client could bind but thinks we cannot; "p": binds with cb_name
    cb_name: str | None
    authzid: str
    user: str
    nonce: str
    gs2_header: str  # as sent, e.g. "p=tls-server-end-point,,": what c= must carry back
    bare: str  # client-first-message-bare, as sent: the first part of the AuthMessage


def parse_client_first(data: bytes) -> ClientFirst:
    text = _text(data)
    parts = text.split(",")
    if len(parts) < 4:
        raise ScramError("invalid-encoding", "client-first message needs gs2 header, n= and r=")
    flag, authzid_part = parts[0], parts[1]
    cb_name = None
    if flag.startswith("p="):
        cb_name = flag[2:]
        if not cb_name or any(not (c.isascii() and (c.isalnum() or c in ".-")) for c in cb_name):
            raise ScramError("invalid-encoding", "bad channel binding name")
        flag = "p"
    elif flag not in ("n", "y"):
        raise ScramError("invalid-encoding", "bad gs2 channel binding flag")
    authzid = decode_saslname(_attribute(authzid_part, "a")) if authzid_part else ""
    user = decode_saslname(_attribute(parts[2], "n"))
    nonce = _nonce(_attribute(parts[3], "r"))
    for extension in parts[4:]:  # optional extensions are ignored (RFC 5802 §7), but must be attributes
        if len(extension) < 2 or extension[1] != "=" or not (extension[0].isascii() and extension[0].isalpha()):
            raise ScramError("invalid-encoding", "bad attribute")
    if not user:
        raise ScramError("invalid-username-encoding", "empty user name")
    if len(user) > MAX_IDENTITY or len(authzid) > MAX_IDENTITY:
        raise ScramError("other-error", "user name too long")
    if authzid and authzid.casefold() != user.casefold():
        raise AuthzidRefused("authorization identity differs from the user")
    header = f"{parts[0]},{parts[1]},"
    return ClientFirst(flag, cb_name, authzid, user, nonce, header, text[len(header) :])


@dataclass(frozen=True)
class ClientFinal:
    channel_binding: bytes  # c=, decoded: the gs2 header, then the binding data with "p"
    nonce: str
    proof: bytes
    without_proof: str  # client-final-message-without-proof: the last part of the AuthMessage


def parse_client_final(data: bytes) -> ClientFinal:
    text = _text(data)
    parts = text.split(",")
    if len(parts) < 3:
        raise ScramError("invalid-encoding", "client-final message needs c=, r= and p=")
    binding = _unb64(_attribute(parts[0], "c"))
    nonce = _nonce(_attribute(parts[1], "r"))
    proof = _unb64(_attribute(parts[-1], "p"), "invalid-proof")
    for extension in parts[2:-1]:
        if len(extension) < 2 or extension[1] != "=" or not (extension[0].isascii() and extension[0].isalpha()):
            raise ScramError("invalid-encoding", "bad attribute")
    return ClientFinal(binding, nonce, proof, text[: len(text) - len(parts[-1]) - 1])


def server_first(nonce: str, salt: bytes, iterations: int) -> bytes:
    return f"r={nonce},s={_b64(salt)},i={iterations}".encode("ascii")


def server_final(signature: bytes) -> bytes:
    return f"v={_b64(signature)}".encode("ascii")


# --- one exchange, server side -----------------------------------------------------------------------------


class ServerExchange:
    """The server's side of one SCRAM-SHA-256[-PLUS] authentication, between the bytes and the store.

    `bindings` maps the channel binding types this connection can give to their data (empty without
    TLS); `plus_offered` says whether SCRAM-SHA-256-PLUS was advertised to this client. Use:
    `start(client_first)`, then `challenge(salt, iterations)` (the server-first message), then
    `finish(client_final)` -> (AuthMessage, ClientProof) for the store, once."""

    def __init__(self, mechanism: str, bindings: dict[str, bytes], plus_offered: bool):
        if mechanism not in (MECHANISM, MECHANISM_PLUS):
            raise ValueError(f"not a SCRAM mechanism: {mechanism}")
        self.mechanism, self.bindings, self.plus_offered = mechanism, bindings, plus_offered
        self.first: ClientFirst | None = None
        self._server_first: bytes | None = None
        self._nonce = ""
        self._done = False

    def start(self, client_first: bytes) -> ClientFirst:
        if self.first is not None:
            raise ScramError("other-error", "SCRAM exchange already started")
        first = parse_client_first(client_first)
        if self.mechanism == MECHANISM_PLUS and first.flag != "p":
            raise ScramError("invalid-encoding", "SCRAM-SHA-256-PLUS needs channel binding (p=)")
        if self.mechanism == MECHANISM and first.flag == "p":
            raise ScramError("invalid-encoding", "channel binding needs SCRAM-SHA-256-PLUS")
        if first.flag == "y" and self.plus_offered:  # RFC 5802 §6: someone removed -PLUS on the way
            raise ScramError("server-does-support-channel-binding", "the server supports channel binding")
        if first.flag == "p" and first.cb_name not in self.bindings:
            raise ScramError(
                "unsupported-channel-binding-type",
                "unsupported channel binding type; this connection offers: "
                + (", ".join(self.bindings) or "none"),
            )
        self.first = first
        return first

    def challenge(self, salt: bytes, iterations: int) -> bytes:
        """The server-first message (the store gave the salt and iteration count)."""
        if self.first is None or self._server_first is not None:
            raise RuntimeError("challenge() comes once, after start()")
        self._nonce = self.first.nonce + secrets.token_urlsafe(NONCE_BYTES)
        self._server_first = server_first(self._nonce, salt, iterations)
        return self._server_first

    def finish(self, client_final: bytes) -> tuple[bytes, bytes]:
        """(AuthMessage, ClientProof) once the nonce echo and the channel binding check out."""
        if self.first is None or self._server_first is None:
            raise RuntimeError("finish() comes after challenge()")
        if self._done:
            raise ScramError("other-error", "SCRAM exchange already finished")
        self._done = True
        final = parse_client_final(client_final)
        if not hmac.compare_digest(final.nonce.encode(), self._nonce.encode()):
            raise ScramError("other-error", "nonce mismatch")
        expected = self.first.gs2_header.encode("utf-8")
        if self.first.flag == "p":
            expected += self.bindings[self.first.cb_name or ""]
        if not hmac.compare_digest(final.channel_binding, expected):
            raise ScramError("channel-bindings-dont-match", "channel bindings do not match")
        auth_message = b",".join(
            (self.first.bare.encode("utf-8"), self._server_first, final.without_proof.encode("utf-8"))
        )
        return auth_message, final.proof


def decode_response(text: bytes | str) -> bytes:
    """One base64 SASL response carrying a SCRAM message (mailflow.sasl's strict base64, bounded)."""
    return decode_base64(text, MAX_ENCODED)

