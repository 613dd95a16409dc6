"""Every parser that sees a client's bytes, as a fuzz target: bytes in, and a check that fails only on a
finding. The same targets serve the Hypothesis tests (test_fuzz.py), the coverage-guided Atheris runs
(`make fuzz`, run.py) and the replay of the kept corpus (corpus/<target>/).

A finding is any of:
- an exception other than the parser's documented error (`PermFailure` for SMTP syntax, `ParseError`
  for IMAP, `ProxyError`, `SaslError`, `ValueError` for a FETCH section-spec), or a session that answers
  with its internal-error reply (which is what an unexpected exception inside a session becomes);
- an answer that breaks its own protocol: an SMTP reply line that is not `ddd[ -]text`, a BODYSTRUCTURE
  or ENVELOPE that is not one well-formed IMAP list (an injected CRLF, a literal with a wrong count);
- an inconsistent result: MIME part offsets outside the message or outside their parent, a parse that
  does not survive the store's JSON form, an address that does not parse back to itself;
- time: an input that takes longer than `budget(len)` (a constant plus a bound per KiB) three times in a
  row. A quadratic loop or a backtracking regex shows up here long before it would hang a server.

`Stats` keeps, per target, the executions and the slowest input per KiB, which `make fuzz` prints.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailflow import mime
from mailflow.errors import PermFailure
from mailflow.proxy_protocol import ProxyError, encode_v1, parse_v1, parse_v2, read_header

# The time budget: BUDGET_BASE_S plus BUDGET_PER_KIB_S for each KiB of input. Generous on purpose: the
# machine is shared with other test runs (2 cores), and under Atheris the code is instrumented (slower by
# BUDGET_INSTRUMENTED). A quadratic parser exceeds it by orders of magnitude at a few KiB.
BUDGET_BASE_S = float(os.environ.get("MAILFLOW_FUZZ_BUDGET_BASE_S", "0.25"))
BUDGET_PER_KIB_S = float(os.environ.get("MAILFLOW_FUZZ_BUDGET_PER_KIB_S", "0.02"))
BUDGET_INSTRUMENTED = 5.0


class Finding(AssertionError):
    """What a target raises for a bug; everything else a target raises is a bug too."""


class TooSlow(Finding):
    pass


@dataclass
class Stats:
    executions: int = 0
    slowest_ms_per_kib: float = 0.0
    slowest_len: int = 0
    slowest_ms: float = 0.0


@dataclass(frozen=True)
class Target:
    name: str
    check: Callable[[bytes], None]
    what: str  # the parser(s) it reaches
    max_len: int = 4096
    tokens: tuple[bytes, ...] = ()  # a dictionary for mutations (libFuzzer -dict, Hypothesis splices)
    stats: Stats = field(default_factory=Stats, compare=False)


_loop: asyncio.AbstractEventLoop | None = None


def run_async(coro):
    """One event loop for every async target in this process (a loop per input would cost more than most
    inputs)."""
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coro)


def budget(n: int, instrumented: bool = False) -> float:
    seconds = BUDGET_BASE_S + BUDGET_PER_KIB_S * n / 1024
    return seconds * (BUDGET_INSTRUMENTED if instrumented else 1.0)


def execute(target: Target, data: bytes, instrumented: bool = False) -> float:
    """Run one input through `target.check` within the time budget; returns the seconds it took. An input
    that takes over 10 ms is run twice more and counts with its fastest time: on a shared machine a
    scheduler hiccup is no slow input, and a slow parser stays slow."""
    limit = budget(len(data), instrumented)
    best = None
    for _ in range(3):
        t0 = time.perf_counter()
        target.check(data)
        took = time.perf_counter() - t0
        best = took if best is None else min(best, took)
        if best <= 0.01:
            break
    s = target.stats
    s.executions += 1
    per_kib = best * 1000 / max(len(data) / 1024, 1.0)  # under 1 KiB counts as 1 KiB
    if per_kib > s.slowest_ms_per_kib:
        s.slowest_ms_per_kib, s.slowest_len, s.slowest_ms = per_kib, len(data), best * 1000
    if best > limit:
        raise TooSlow(f"{target.name}: {len(data)} bytes took {best * 1000:.0f} ms (budget {limit * 1000:.0f} ms)")
    return best


# --- SMTP: commands, DATA, SASL, PROXY, DSN parameters -----------------------------------------------------

_REPLY_LINE = re.compile(rb"[2-5]\d\d(?:[ -][\x20-\x7e\x80-\xff]*)?\Z")
_drivers: dict[str, object] = {}


def _smtp(proxy: bool = False):
    key = f"smtp-proxy={proxy}"
    if key not in _drivers:
        from tests.fuzz.drivers import SmtpDriver

        _drivers[key] = SmtpDriver(proxy=proxy)
    return _drivers[key]


def check_smtp_output(output: bytes) -> None:
    """Every line is a reply line; no reply is the session's internal error (an unexpected exception)."""
    for line in output.split(b"\r\n")[:-1]:
        if not _REPLY_LINE.match(line):
            raise Finding(f"not an SMTP reply line: {line[:200]!r}")
    if b"4.3.0 Internal error" in output:
        raise Finding(f"internal error in the SMTP session: {output[-300:]!r}")
    if output and not output.endswith(b"\r\n"):
        raise Finding(f"SMTP output ends inside a line: {output[-100:]!r}")


def smtp_session(data: bytes) -> None:
    check_smtp_output(run_async(_smtp().run(data)).output)


_DATA_PREFIX = b"EHLO fuzz.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<user@example.test>\r\nDATA\r\n"


def smtp_data(data: bytes) -> None:
    """The DATA path: whatever the body, the reply is 250 with exactly the unstuffed body queued, or a
    refusal with nothing queued."""
    from mailflow_smtp_ingress import parser

    # One message: the data, a terminator after it, and nothing past the first end of data.
    sent = data + b"\r\n.\r\n"
    if sent.startswith(b".\r\n"):
        sent, body = b".\r\n", b""
    else:
        end = sent.find(b"\r\n.\r\n")
        sent, body = sent[: end + 5], sent[: end + 2]
    d = run_async(_smtp().run(_DATA_PREFIX + sent + b"QUIT\r\n"))
    check_smtp_output(d.output)
    replies = [line for line in d.output.split(b"\r\n") if line[:3].isdigit() and line[3:4] != b"-"]
    final = replies[5] if len(replies) > 5 else b""  # 220, EHLO, MAIL, RCPT, 354, then the DATA reply
    if final.startswith(b"250"):
        if len(d.queued) != 1:
            raise Finding(f"250 after DATA but {len(d.queued)} messages queued")
        expected = parser.unstuff(body)
        if not d.queued[0][1].endswith(expected):
            raise Finding(f"queued body differs from what was sent: {d.queued[0][1][-80:]!r} vs {expected[-80:]!r}")
    elif d.queued:
        raise Finding(f"a message was queued but the reply was {final!r}")


def smtp_parser(data: bytes) -> None:
    """MAIL/RCPT arguments: paths, addresses, ESMTP and DSN parameters (RFC 3461 NOTIFY, ORCPT, ENVID,
    RET, xtext). A parsed address must parse back to itself from its own formatted form."""
    from mailflow_smtp_ingress import parser

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    for utf8 in (False, True):
        try:
            path, rest = parser.split_path(text)
            params = parser.parse_params(rest)
        except PermFailure:
            continue
        for fn, arg in ((parser.mail_params, 10**6), (parser.rcpt_params, None)):
            try:
                fn(params, arg) if arg else fn(params)
            except PermFailure:
                pass
        try:
            addr = parser.parse_address(path, utf8=utf8, allow_postmaster=True)
        except PermFailure:
            continue
        if addr.domain:
            again = parser.parse_address(addr.address, utf8=utf8)
            if (again.local, again.domain) != (addr.local, addr.domain):
                raise Finding(f"{path!r} -> {addr.address!r} -> {again.address!r}")
    try:
        parser.xtext_decode(text)
    except PermFailure:
        pass


def sasl(data: bytes) -> None:
    """SASL PLAIN and LOGIN as IMAP/POP3 (decode_plain) and SMTP (AUTH) decode them, from the raw
    client text and from the base64 of arbitrary bytes (which reaches past the base64 layer)."""
    from mailflow.sasl import SaslError, decode_plain

    encoded = base64.b64encode(data)
    for b64 in (data, encoded):
        try:
            user, _password = decode_plain(b64)
        except SaslError:
            continue
        if not user:
            raise Finding(f"decode_plain accepted an empty user from {b64[:80]!r}")
    line = data.split(b"\r\n", 1)[0][:4000]
    dialogue = (
        b"EHLO fuzz.test\r\nAUTH PLAIN " + encoded + b"\r\nAUTH PLAIN\r\n" + line + b"\r\n"
        + b"AUTH LOGIN\r\n" + encoded + b"\r\n" + line + b"\r\nAUTH LOGIN " + line + b"\r\n" + encoded + b"\r\n"
    )  # fmt: skip
    check_smtp_output(run_async(_smtp().run(dialogue)).output)


def scram(data: bytes) -> None:
    """SCRAM-SHA-256 (mailflow.scram): the client-first and client-final grammar on raw bytes (only
    SaslError, and what parses reassembles to the input), a server exchange fed the input as both
    messages, and smtp-ingress's AUTH SCRAM-SHA-256 dialogue with it as base64 and as raw text."""
    from mailflow.sasl import SaslError
    from mailflow.scram import MECHANISM, ServerExchange, parse_client_final, parse_client_first

    first_line, _, rest = data.partition(b"\n")
    try:
        first = parse_client_first(first_line)
    except SaslError:
        first = None
    if first is not None and (first.gs2_header + first.bare).encode() != first_line:
        raise Finding(f"client-first does not reassemble: {first_line[:80]!r}")
    if first is not None and "," in first.nonce:
        raise Finding(f"a nonce with a comma: {first_line[:80]!r}")
    try:
        final = parse_client_final(rest)
    except SaslError:
        final = None
    if final is not None and not rest.startswith(final.without_proof.encode() + b",p="):
        raise Finding(f"client-final does not reassemble: {rest[:80]!r}")
    server = ServerExchange(MECHANISM, {}, False)
    try:
        server.start(first_line)
        server.challenge(b"salt", 4096)
        server.finish(rest)
    except SaslError:
        pass
    encoded = base64.b64encode(first_line[:3000])
    line = rest.split(b"\r\n", 1)[0][:4000]
    dialogue = (
        b"EHLO fuzz.test\r\nAUTH SCRAM-SHA-256 " + encoded + b"\r\n" + base64.b64encode(line) + b"\r\n"
        + b"\r\nAUTH SCRAM-SHA-256\r\n" + line + b"\r\n" + encoded + b"\r\n"
    )  # fmt: skip
    check_smtp_output(run_async(_smtp().run(dialogue)).output)


def proxy(data: bytes) -> None:
    """PROXY v1/v2 as every listener reads it (mailflow.proxy_protocol, from the socket): ProxyError
    only, a v1 result that encodes back to itself, and an SMTP session that either closes or greets."""
    info = None
    try:
        info = parse_v1(data) if data.startswith(b"PROXY") else parse_v2(data)
    except ProxyError:
        pass
    if info is not None and info.version == 1 and info.source is not None:
        again = parse_v1(encode_v1(info.source, info.dest))
        if again != info:
            raise Finding(f"v1 round trip: {info} -> {again}")

    async def from_socket() -> None:
        import socket

        a, b = socket.socketpair()
        a.setblocking(False)
        try:
            b.sendall(data)
            b.shutdown(socket.SHUT_WR)
            try:
                await read_header(a, 0.5)
            except ProxyError:
                pass
        finally:
            a.close()
            b.close()

    run_async(from_socket())
    d = run_async(_smtp(proxy=True).run(data + b"\r\nQUIT\r\n"))
    check_smtp_output(d.output)


# --- IMAP ---------------------------------------------------------------------------------------------------


def imap_parser(data: bytes) -> None:
    """The Framer cuts the bytes (in odd chunks) into commands; every command parses or raises
    ParseError. A command once framed parses the same way whatever the chunking was."""
    from mailflow_imap_pop3.imap.framing import Continue, FrameError, Framer
    from mailflow_imap_pop3.imap.lexer import ParseError
    from mailflow_imap_pop3.imap.parser import parse
    from tests.fuzz.drivers import chunks

    framer = Framer(max_line=1024, max_literal=2048, max_append=4096)
    for piece in chunks(data) + [b"\r\n"]:
        framer.feed(piece)
        while True:
            item = framer.next()
            if item is None:
                break
            if isinstance(item, Continue):
                continue
            if isinstance(item, FrameError):
                if item.fatal:
                    return
                continue
            try:
                parse(item)
            except ParseError:
                pass


# --- POP3 ---------------------------------------------------------------------------------------------------

_pop3_driver = None


def pop3_session(data: bytes) -> None:
    """A whole POP3 dialogue; the session never answers with its internal error, never leaves the
    maildrop locked, and every line it sends ends in CRLF."""
    global _pop3_driver
    if _pop3_driver is None:
        from tests.fuzz.drivers import Pop3Driver

        _pop3_driver = Pop3Driver()
    out = run_async(_pop3_driver.run(data)).output
    if b"Internal error" in out:
        raise Finding(f"internal error in the POP3 session: {out[-300:]!r}")
    if out and not out.endswith(b"\r\n"):
        raise Finding(f"POP3 output ends inside a line: {out[-100:]!r}")


# --- MIME, BODYSTRUCTURE ----------------------------------------------------------------------------------------


class _Failures(logging.Handler):
    """mime.parse logs a bug in its walk and falls back to one text part: for the fuzzer, a finding."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_mime_failures = _Failures()
logging.getLogger(mime.__name__).addHandler(_mime_failures)


def _walk(part: mime.BodyPart, n: int, lo: int, hi: int, path: str) -> None:
    if not (lo <= part.start <= part.body_start <= part.end <= hi):
        raise Finding(f"part {path or 'top'} offsets {part.start},{part.body_start},{part.end} outside {lo}..{hi} of {n}")
    if part.size != part.end - part.body_start:
        raise Finding(f"part {path or 'top'} size {part.size} is not end - body_start")
    for i, child in enumerate(part.parts, 1):
        _walk(child, n, part.body_start, part.end, f"{path}.{i}" if path else str(i))


_ATOMIC = re.compile(rb'NIL|\d+|"(?:[^"\\\r\n]|\\["\\])*"')


def check_imap_list(text: bytes) -> None:
    """`text` is exactly one parenthesized IMAP list of NIL, numbers, quoted strings, literals and lists."""
    depth, pos, n = 0, 0, len(text)
    while pos < n:
        c = text[pos : pos + 1]
        if c == b"(":
            depth += 1
            pos += 1
        elif c == b")":
            depth -= 1
            pos += 1
            if depth < 0:
                raise Finding(f"unbalanced ')' at {pos} in {text[:200]!r}")
            if depth == 0 and pos != n:
                raise Finding(f"text after the list: {text[pos : pos + 80]!r}")
        elif c == b" " and depth > 0:
            pos += 1
        elif c == b"{":
            m = re.match(rb"\{(\d+)\}\r\n", text[pos:])
            if m is None:
                raise Finding(f"bad literal at {pos}: {text[pos : pos + 40]!r}")
            pos += m.end() + int(m.group(1))
            if pos > n:
                raise Finding("literal runs past the end")
        else:
            m = _ATOMIC.match(text, pos)
            if m is None or depth == 0:
                raise Finding(f"bad item at {pos}: {text[pos : pos + 60]!r}")
            pos = m.end()
    if depth != 0:
        raise Finding(f"unclosed list: {text[-100:]!r}")


_SPECS = ("", "HEADER", "TEXT", "1", "1.MIME", "2", "1.1", "2.HEADER", "1.TEXT", "HEADER.FIELDS (SUBJECT FROM)")


def mime_parse(data: bytes) -> None:
    """mime.parse never raises and never falls back on a bug; offsets nest; the store's JSON form gives the
    same parse back; BODYSTRUCTURE, BODY and ENVELOPE render as well-formed IMAP lists; sections slice."""
    from mailflow_imap_pop3.imap import responses
    from mailflow_mailbox_store.sections import section

    _mime_failures.records.clear()
    p = mime.parse(data)
    if _mime_failures.records:
        r = _mime_failures.records[0]
        raise Finding(f"mime walk failed: {r.getMessage()} {r.exc_info[1]!r}" if r.exc_info else r.getMessage())
    _walk(p.body, len(data), 0, len(data), "")
    if mime.from_json(mime.to_json(p)) != p:
        raise Finding("the parse does not survive to_json/from_json")
    check_imap_list(responses.body_structure(p.body, True))
    check_imap_list(responses.body_structure(p.body, False))
    check_imap_list(responses.envelope(p.envelope))
    for spec in _SPECS:
        out = section(data, p, spec)
        if not isinstance(out, bytes) or len(out) > len(data):
            raise Finding(f"section {spec!r} gave {type(out).__name__} of {len(out)}")


def mime_section(data: bytes) -> None:
    """FETCH BODY[<section-spec>] as the client writes it: imap-pop3's parser takes it or raises ParseError,
    and the store cuts every section that parser takes (a ValueError there would be a client's valid FETCH
    refused); the store's own spec reader (its REST input) raises only ValueError on any text."""
    from mailflow_imap_pop3.imap.lexer import ParseError
    from mailflow_imap_pop3.imap.parser import parse
    from mailflow_mailbox_store.sections import section

    spec, _, message = data.partition(b"\n")
    p = mime.parse(message)
    try:
        cmd = parse(b"a1 FETCH 1 BODY.PEEK[" + spec + b"]")
    except ParseError:
        cmd = None
    if cmd is not None:
        text = cmd.args.atts[0].section.spec()
        try:
            section(message, p, text)
        except ValueError as exc:
            raise Finding(f"the store refuses {text!r}, parsed by imap-pop3 from {spec!r}: {exc}") from exc
    try:
        section(message, p, spec.decode("latin-1"))
    except ValueError:
        pass


# --- DSN ----------------------------------------------------------------------------------------------------------


def dsn(data: bytes) -> None:
    """The DSN path end to end: MAIL/RCPT DSN parameters as a client sends them (PermFailure only), and
    the DSN built from what they parsed to plus an arbitrary original message: ASCII notification parts,
    no header line from the client, a multipart/report that our own MIME parser reads as such."""
    from mailflow_queue import dsn as dsnmod
    from mailflow_queue.ledger import NoticeRecipient, NoticeWork
    from mailflow_smtp_ingress import parser

    fields = data.split(b"\n", 4) + [b""] * 4
    mail_text, rcpt_text, diag, remote = (f.decode("utf-8", "replace") for f in fields[:4])
    original = fields[4]
    envid = ret = orcpt = None
    try:
        mp = parser.mail_params(parser.parse_params(mail_text), 10**6)
        envid, ret = mp.envid, mp.ret
    except PermFailure:
        pass
    try:
        orcpt = parser.rcpt_params(parser.parse_params(rcpt_text)).orcpt
    except PermFailure:
        pass
    kind = ("failure", "delay", "success")[len(data) % 3]
    # The remote MX's reply as delivery reads it (code, enhanced status) becomes the DSN's Status: and
    # Diagnostic-Code:; delivery's reply reader checks the code is three ASCII digits first.
    from mailflow_delivery.smtp_out import Reply

    code = int(diag[:3]) if diag[:3].isascii() and diag[:3].isdigit() else 554
    reply = Reply(code, (diag[4:],))
    rcpt = NoticeRecipient("user@example.test", orcpt, "bounced", reply.status, str(reply), remote or None, 1.7e9)
    work = NoticeWork(1, kind, "Q1", "Q0", "t", "sender@example.test", "mem:Q0", False, len(original),
                      1.7e9, envid, ret, 1.7e9 + 86400, [rcpt])  # fmt: skip
    raw = dsnmod.build(work, original or None, "mx.example.test", 1.7e9)
    head_and_report = raw.split(b"Content-Description: Undelivered Message", 1)[0].split(
        b"Content-Description: Message Headers", 1
    )[0]
    if not head_and_report.isascii():
        raise Finding("non-ASCII in the DSN's own parts")
    header = raw.split(b"\r\n\r\n", 1)[0]
    if len(header.split(b"\r\n")) != 8 + (not original):
        raise Finding(f"the DSN header has extra lines: {header[:400]!r}")
    p = mime.parse(raw)
    if (p.body.type, p.body.subtype) != ("MULTIPART", "REPORT") or len(p.body.parts) < 2:
        raise Finding(f"the DSN does not parse as multipart/report: {p.body.type}/{p.body.subtype}")
    report = p.body.parts[1]
    if (report.type, report.subtype) != ("MESSAGE", "DELIVERY-STATUS"):
        raise Finding(f"second part is {report.type}/{report.subtype}")
    text = raw[report.body_start : report.end]
    if b"Final-Recipient: rfc822; user@example.test" not in text or text.count(b"\r\n\r\n") != 1:
        raise Finding(f"delivery-status fields were split or injected: {text[:500]!r}")


# --- the registry --------------------------------------------------------------------------------------------------

_SMTP_TOKENS = (
    b"EHLO ", b"HELO ", b"MAIL FROM:", b"RCPT TO:", b"DATA\r\n", b"BDAT ", b" LAST", b"RSET\r\n",
    b"AUTH PLAIN ", b"AUTH LOGIN", b"STARTTLS\r\n", b"QUIT\r\n", b"NOOP\r\n", b"VRFY ", b"\r\n.\r\n",
    b"<user@example.test>", b"<a@b.test>", b" SIZE=", b" BODY=8BITMIME", b" SMTPUTF8", b" RET=HDRS",
    b" ENVID=", b" NOTIFY=SUCCESS,FAILURE", b" ORCPT=rfc822;", b"+2B", b"\"q\"@", b"@a,@b:", b"[IPv6:::1]",
    b"[127.0.0.1]", b"\r\n", b"\n", b"\r", b"\x00", b"=", b"*\r\n",
)  # fmt: skip
_IMAP_TOKENS = (
    b"a1 ", b"LOGIN ", b"SELECT ", b"FETCH ", b"UID ", b"STORE ", b"SEARCH ", b"APPEND ", b"LIST ",
    b"STATUS ", b"COPY ", b"MOVE ", b"ID ", b"ENABLE ", b"AUTHENTICATE ", b"IDLE", b"{5}\r\n", b"{3+}\r\n",
    b"~{2}\r\n", b"(", b")", b"[", b"]", b"<", b">", b"\"", b"\\", b"*", b"%", b"1:*", b"BODY[", b"BODY.PEEK[",
    b"HEADER.FIELDS", b"CHARSET ", b"UTF-8", b"SINCE 1-Jan-2020", b"\\Seen", b"+FLAGS", b"(CONDSTORE)",
    b"MODSEQ", b"CHANGEDSINCE", b"VANISHED", b"RETURN (", b"&AOQ-", b"NIL", b"\r\n",
)  # fmt: skip
_POP3_TOKENS = (
    b"USER alice@example.test\r\n", b"PASS alice-pw\r\n", b"AUTH PLAIN ", b"AUTH PLAIN\r\n", b"STAT\r\n",
    b"LIST ", b"RETR ", b"TOP ", b"DELE ", b"UIDL", b"RSET\r\n", b"NOOP\r\n", b"QUIT\r\n", b"CAPA\r\n",
    b"STLS\r\n", b"APOP ", b"1", b"2", b"3", b"0", b"4294967296", b"\r\n", b"\n", b"*\r\n",
)  # fmt: skip
_MIME_TOKENS = (
    b"Content-Type: ", b"multipart/mixed; boundary=", b"message/rfc822", b"text/plain; charset=",
    b"Content-Transfer-Encoding: base64", b"quoted-printable", b"Content-Disposition: attachment; filename*0*=",
    b"\r\n--", b"--\r\n", b"\r\n\r\n", b"=?utf-8?B?", b"=?iso-8859-1?Q?", b"?=", b"From: ", b"To: ", b"Cc: ",
    b"Subject: ", b"Message-ID: <", b"In-Reply-To: ", b"Date: ", b"Content-Language: ", b"Content-Location: ",
    b"<a@b>", b"group: a@b, c@d;", b"\"quoted\" <x@y>", b"(comment)", b"\r\n\t", b"multipart/digest",
)  # fmt: skip
# --- DKIM and ARC verification (mailflow.authn): what a port-25 client sends in its header block -----------

# Keys every selector of fuzz.test has: a fixed Ed25519 key (the corpus is signed with it) and a small RSA
# key (the RSA paths run; no corpus signature verifies with it). Made on first use.
FUZZ_ED25519_SEED = bytes(range(32))
_dkim_dns: list[object] = []


def _dkim_table():
    if not _dkim_dns:
        from cryptography.hazmat.primitives import serialization as ser
        from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

        from tests.support.dkim import TEMP_FAIL, TableDns

        ed = ed25519.Ed25519PrivateKey.from_private_bytes(FUZZ_ED25519_SEED).public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
        spki = rsa.generate_private_key(65537, 1024).public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
        table = {f"{s}._domainkey.fuzz.test": [f"v=DKIM1; k=ed25519; p={base64.b64encode(ed).decode()}"] for s in ("e", "s1-ed25519")}
        table |= {f"{s}._domainkey.fuzz.test": [f"v=DKIM1; p={base64.b64encode(spki).decode()}"] for s in ("r", "s1-rsa")}
        table |= {"t._domainkey.fuzz.test": TEMP_FAIL, "two._domainkey.fuzz.test": ["p=", "p="]}
        _dkim_dns.append(TableDns(table))
    return _dkim_dns[0]


def dkim(data: bytes) -> None:
    """DKIM verify and ARC verify_chain never raise, give one result per DKIM-Signature field (but none for
    the others of a domain that passed), and each result is one RFC 8601 allows."""
    from typing import get_args

    from mailflow.authn import ArcResult, DkimResult
    from mailflow.authn.arc import verify_chain
    from mailflow.authn.dkim import field_name, split, verify

    dns, now = _dkim_table(), 1_800_000_000
    results = run_async(verify(data, dns, now))
    parsed = split(data)
    expected = 1 if parsed is None else sum(1 for n, _ in parsed[0] if field_name(n) == b"dkim-signature")
    passed = {r.domain for r in results if r.result == "pass"}
    # one result per signature, but for the other signatures of a domain that passed (RFC 6376 §6.1)
    if len(results) > expected or (len(results) < expected and not passed):
        raise Finding(f"{len(results)} DKIM results for {expected} signatures")
    if any(r.result not in get_args(DkimResult) for r in results):
        raise Finding(f"a DKIM result outside RFC 8601: {results}")
    chain = run_async(verify_chain(data, dns, now))
    if chain.result not in get_args(ArcResult) or not 0 <= chain.instances <= 50:
        raise Finding(f"an ARC result outside RFC 8617: {chain}")


def authn(data: bytes) -> None:
    """What smtp-ingress's checks read from a message besides DKIM and ARC: Authentication-Results
    fields in our name removed (whole fields only, nothing else changed, none of ours left), the From
    domains and a DMARC record (mailflow.authn.dmarc), and a header written with the text in a reason
    (one field: every further line folded)."""
    from mailflow.authn import Dmarc, Spf, dmarc, results
    from mailflow.authn.dkim import field_name, split

    ours = "mx.fuzz.test"
    out = results.remove_ours(data, ours)
    if len(out) > len(data) or (out is not data and results.remove_ours(out, ours) != out):
        raise Finding("remove_ours left a field of ours, or added bytes")
    parsed = split(data)
    if parsed is not None:
        froms = [v for n, v in parsed[0] if field_name(n) == b"from"]
        domains = dmarc.author_domains(froms)
        if not isinstance(domains, Dmarc) and not (0 < len(domains) <= dmarc.MAX_FROM_DOMAINS):
            raise Finding(f"author_domains gave {len(domains)} domains")
    text = data[:2048].decode("utf-8", "replace")
    if dmarc.is_dmarc(text):
        try:
            dmarc.parse_record(text, "fuzz.test", "fuzz.test")
        except dmarc.Invalid:
            pass
    header = results.header(ours, [Spf("fail", "mailfrom", text[:255], reason=text)])
    if header.count(b"\r\n") != 2 or not header.split(b"\r\n")[1].startswith(b"\t"):
        raise Finding("a reason broke the Authentication-Results field")


_AUTHN_TOKENS = (
    b"Authentication-Results: ", b"authentication-results :", b"mx.fuzz.test", b"MX.FUZZ.TEST", b'"mx.fuzz.test"',
    b"(comment (nested) \\) ", b"; spf=pass", b"\r\n\t", b"\r\n ", b"\r\n\r\n", b"From: ", b"a@fuzz.test",
    b"<b@sub.fuzz.co.uk>", b"group: x@y.test;", b", ", b"v=DMARC1; ", b"p=reject; ", b"sp=quarantine; ", b"pct=50; ",
    b"rua=mailto:r@fuzz.test; ", b"adkim=s; ",
)  # fmt: skip
_DKIM_TOKENS = (
    b"DKIM-Signature: ", b"v=1; ", b"a=rsa-sha256; ", b"a=ed25519-sha256; ", b"a=rsa-sha1; ", b"c=relaxed/simple; ",
    b"d=fuzz.test; ", b"s=e; ", b"s=r; ", b"s=t; ", b"s=two; ", b"h=from:to:from; ", b"bh=", b"b=", b"l=3; ", b"i=@fuzz.test; ",
    b"t=1; x=2; ", b"q=dns/txt; ", b"ARC-Seal: i=1; cv=none; ", b"ARC-Message-Signature: i=1; ", b"ARC-Authentication-Results: i=1; ",
    b"i=2; cv=pass; ", b"From: a@fuzz.test\r\n", b"\r\n\t", b"\r\n\r\n", b";", b"=",
)  # fmt: skip
_MTA_STS_TOKENS = (
    b"HTTP/1.1 200 OK\r\n", b"Content-Type: text/plain\r\n", b"Content-Length: ", b"\r\n\r\n", b"version: STSv1\n",
    b"mode: enforce\n", b"mode: testing\r\n", b"mx: *.fuzz.test\n", b"mx: mx.fuzz.test\n", b"max_age: 86400\n", b"v=STSv1; id=", b";",
)  # fmt: skip
_PROXY_TOKENS = (
    b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN", b"192.0.2.1 ", b"::1 ", b"65535", b"\r\n",
    b"\r\n\r\n\x00\r\nQUIT\n", b"\x21\x11", b"\x21\x21", b"\x20\x00", b"\x21\x31", b"\x00\x0c",
)  # fmt: skip

# --- MTA-STS ------------------------------------------------------------------------------------------------


def mta_sts(data: bytes) -> None:
    """What a recipient domain's servers send delivery for MTA-STS (RFC 8461): the HTTP response of the
    policy fetch (mailflow_delivery.mtasts.read_response: FetchError only), the policy file and TXT
    records (mailflow.mtasts: PolicyError only); a parsed policy survives its own text form."""
    from mailflow import mtasts
    from mailflow_delivery.mtasts import MAX_HEADER_LINE, FetchError, read_response

    async def response() -> bytes | None:
        r = asyncio.StreamReader(limit=MAX_HEADER_LINE)
        r.feed_data(data)
        r.feed_eof()
        try:
            return await read_response(r, "mta-sts.fuzz.test")
        except FetchError:
            return None

    body = run_async(response())
    for text in (data, body or b""):
        try:
            policy = mtasts.parse_policy(text)
        except mtasts.PolicyError:
            continue
        if mtasts.parse_policy(policy.text().encode()) != policy:
            raise Finding(f"policy round trip: {policy}")
        for host in ("mx.fuzz.test", *policy.mx):
            policy.allows(host)
    try:
        mtasts.parse_txt(data.decode("utf-8", "replace").split("\n"))
    except mtasts.PolicyError:
        pass


# --- autoconfiguration ----------------------------------------------------------------------------------------

_AUTODISCOVER_NS = b"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
_AUTODISCOVER_TOKENS = (
    b'<Autodiscover xmlns="' + _AUTODISCOVER_NS + b'">', b"<Request>", b"</Request>", b"<EMailAddress>", b"</EMailAddress>",
    b"<AcceptableResponseSchema>", b"</AcceptableResponseSchema>", b"</Autodiscover>", b"<!DOCTYPE a [", b'<!ENTITY x "', b"&x;",
    b"&amp;", b"&#x40;", b"<![CDATA[", b"]]>", b"@example.test", b'<?xml version="1.0" encoding="utf-16"?>', b"\xef\xbb\xbf",
)  # fmt: skip


def autodiscover(data: bytes) -> None:
    """smtp-ingress's autoconfiguration (autoconfig.py): an Autodiscover POX body (parse_request:
    BadRequest only, never an entity expanded) and the address in it or in a Thunderbird query
    (address_domain: BadRequest only); an address it accepts makes a response that parses back with that
    address as LoginName and a Thunderbird file for its domain."""
    import xml.etree.ElementTree as ET

    from mailflow_smtp_ingress.autoconfig import (
        OUTLOOK_NS,
        BadRequest,
        ClientConfig,
        address_domain,
        parse_request,
    )

    config = ClientConfig("mx.fuzz.test")
    try:
        address, _schema = parse_request(data)
    except BadRequest:
        address = data.decode("utf-8", "replace")
    try:
        domain = address_domain(address)
    except BadRequest:
        return
    response = ET.fromstring(config.autodiscover(address))
    logins = {e.text for e in response.iter(f"{{{OUTLOOK_NS}}}LoginName")}
    if logins != {address}:
        raise Finding(f"LoginName {logins!r} is not {address!r}")
    if ET.fromstring(config.thunderbird(domain)).find("emailProvider").get("id") != domain:
        raise Finding(f"clientConfig not for {domain!r}")


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("smtp-session", smtp_session, "smtp-ingress session: commands, pipelining, DATA, BDAT, AUTH", 4096, _SMTP_TOKENS),
        Target("smtp-data", smtp_data, "smtp-ingress DATA: dot-stuffing, bare CR/LF, line length, size", 16384, _SMTP_TOKENS),
        Target("smtp-parser", smtp_parser, "smtp-ingress parser.py: paths, addresses, ESMTP parameters, xtext", 1024, _SMTP_TOKENS),
        Target("dsn", dsn, "RFC 3461 parameters (NOTIFY, ORCPT, ENVID, RET), a remote reply, and the DSN built from them", 8192, _SMTP_TOKENS + _MIME_TOKENS),
        Target("sasl", sasl, "SASL PLAIN/LOGIN: imap-pop3 decode_plain and smtp-ingress AUTH", 2048, (b"\x00", b"=", b"*", b"alice@example.test", b"alice-pw")),
        Target("scram", scram, "SCRAM-SHA-256 grammar, server exchange and smtp-ingress AUTH SCRAM-SHA-256", 4096, (b"n,,", b"y,,", b"p=tls-unique,,", b"a=", b"n=", b"r=", b"c=biws,", b",p=", b"=2C", b"=3D", b"\n", b"alice@example.test")),
        Target("proxy", proxy, "PROXY v1/v2: mailflow.proxy_protocol and smtp-ingress (aiosmtpd)", 1024, _PROXY_TOKENS),
        Target("imap-parser", imap_parser, "IMAP framing (literals, limits), lexer and command parser", 4096, _IMAP_TOKENS),
        Target("pop3-session", pop3_session, "POP3 session: commands, AUTH PLAIN, states, pipelining", 2048, _POP3_TOKENS),
        Target("mime", mime_parse, "mime.parse, BODYSTRUCTURE/BODY/ENVELOPE rendering, JSON form, the store's sections", 16384, _MIME_TOKENS),
        Target("dkim", dkim, "DKIM verify and ARC verify_chain (mailflow.authn): tag lists, canonicalization, keys, chains", 8192, _DKIM_TOKENS),
        Target("authn", authn, "Authentication-Results (removal of ours, the header), From domains, DMARC records (mailflow.authn)", 8192, _AUTHN_TOKENS),
        Target("autodiscover", autodiscover, "autoconfiguration: Autodiscover POX bodies (expat, DTDs refused) and mail addresses (smtp-ingress)", 16384, _AUTODISCOVER_TOKENS),
        Target("mta-sts", mta_sts, "MTA-STS: the policy fetch's HTTP response, the policy file and TXT records (delivery, mailflow.mtasts)", 8192, _MTA_STS_TOKENS),
        Target("mime-section", mime_section, "FETCH BODY[section-spec]: imap-pop3's parser, the store's spec reader and slicing", 4096, _MIME_TOKENS + (b"HEADER.FIELDS.NOT (", b".MIME", b".TEXT", b"1.2.3")),
    )
}
