"""ManageSieve (RFC 5804) as transcripts, over the real server and store: the greeting's capabilities,
STARTTLS (capabilities again), AUTHENTICATE PLAIN (initial response or a continuation; failures; the
throttle IMAP shares), the script commands with their response codes, UNAUTHENTICATE, limits, and one
user never seeing another's scripts."""

from __future__ import annotations

import base64

from imaptest import Raw, Running, client_tls, settings_for

from mailflow.sieve.script import SUPPORTED

GOOD = b'require ["fileinto", "imap4flags"];\r\nif header :contains "subject" "report" {\r\n  fileinto "Reports";\r\n}\r\n'


def plain(user: str = "alice@example.test", pw: str = "alice-pw") -> str:
    return base64.b64encode(f"\0{user}\0{pw}".encode()).decode()


def until_ok(c: Raw) -> list[bytes]:
    """Response lines up to and including the one that starts OK, NO or BYE."""
    lines = []
    while True:
        ln = c.line()
        lines.append(ln)
        if ln.split(b" ", 1)[0] in (b"OK", b"NO", b"BYE"):
            return lines


def connect(srv) -> Raw:
    c = Raw("127.0.0.1", srv.port("managesieve"))
    greeting = until_ok(c)
    assert greeting[-1].startswith(b"OK")
    return c


def login(srv, user: str = "alice@example.test", pw: str = "alice-pw") -> Raw:
    c = connect(srv)
    c.send(f'AUTHENTICATE "PLAIN" "{plain(user, pw)}"')
    assert c.line() == b'OK "Logged in"'
    return c


def cmd(c: Raw, text: str | bytes) -> list[bytes]:
    c.send(text)
    return until_ok(c)


def put(c: Raw, name: str, script: bytes) -> list[bytes]:
    c.send_raw(f'PUTSCRIPT "{name}" {{{len(script)}+}}\r\n'.encode() + script + b"\r\n")
    return until_ok(c)


def test_greeting_lists_the_capabilities(srv):
    c = Raw("127.0.0.1", srv.port("managesieve"))
    lines = until_ok(c)
    assert lines == [
        b'"IMPLEMENTATION" "Mailflow"',
        b'"SIEVE" "' + " ".join(SUPPORTED).encode() + b'"',
        b'"SASL" "PLAIN SCRAM-SHA-256"',  # loopback: plaintext allowed; -PLUS needs TLS
        b'"STARTTLS"',
        b'"UNAUTHENTICATE"',
        b'"VERSION" "1.0"',
        b'OK "Mailflow ManageSieve ready"',
    ]
    assert cmd(c, "CAPABILITY") == lines[:-1] + [b'OK "CAPABILITY completed"']
    assert cmd(c, "NOOP") == [b'OK "Done"']
    assert cmd(c, 'NOOP "abc"') == [b'OK (TAG "abc") "Done"']
    assert cmd(c, "LOGOUT") == [b'OK "Logout completed"']
    assert c.closed()


def test_starttls_sends_the_capabilities_again(srv):
    c = connect(srv)
    c.send("STARTTLS")
    assert c.line() == b'OK "Begin TLS negotiation now"'
    c.sock = client_tls().wrap_socket(c.sock)
    c.buf = b""
    lines = until_ok(c)
    assert b'"STARTTLS"' not in lines and lines[-1] == b'OK "TLS active"'
    assert b'"SASL" "PLAIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS"' in lines
    assert cmd(c, "STARTTLS") == [b'NO "TLS is already active"']
    c.send(f'AUTHENTICATE "PLAIN" "{plain()}"')
    assert c.line() == b'OK "Logged in"'
    assert cmd(c, "STARTTLS") == [b'NO "STARTTLS not allowed now: already logged in"']


def test_authenticate_with_a_continuation_and_failures(srv):
    c = connect(srv)
    assert cmd(c, 'AUTHENTICATE "PLAIN" "' + plain(pw="wrong") + '"') == [b'NO "Authentication failed"']
    assert cmd(c, 'AUTHENTICATE "DIGEST-MD5"') == [b'NO "Unsupported mechanism DIGEST-MD5"']
    assert cmd(c, "LISTSCRIPTS") == [b'NO "LISTSCRIPTS not allowed now: log in first"']
    c.send('AUTHENTICATE "PLAIN"')
    assert c.line() == b'""'
    c.send('"*"')
    assert c.line() == b'NO "Authentication cancelled"'
    c.send('AUTHENTICATE "PLAIN"')
    assert c.line() == b'""'
    token = plain().encode()
    c.send_raw(b"{%d+}\r\n" % len(token) + token + b"\r\n")  # the response as a literal
    assert c.line() == b'OK "Logged in"'
    lines = cmd(c, "CAPABILITY")
    assert not any(line.startswith(b'"SASL"') for line in lines) and b'"STARTTLS"' not in lines


def test_script_commands_transcript(srv):
    c = login(srv)
    assert cmd(c, "LISTSCRIPTS") == [b'OK "Listscripts completed"']
    assert cmd(c, 'HAVESPACE "main" 1000') == [b'OK "Putscript would succeed"']
    assert cmd(c, 'HAVESPACE "main" 100000000') == [
        b'NO (QUOTA/MAXSIZE) "a script is at most 65536 octets"'
    ]
    assert put(c, "main", GOOD) == [b'OK "Script stored"']
    assert put(c, "other", b"keep;\r\n") == [b'OK "Script stored"']
    assert cmd(c, "LISTSCRIPTS") == [b'"main"', b'"other"', b'OK "Listscripts completed"']
    assert cmd(c, 'SETACTIVE "main"') == [b'OK "Active script set"']
    assert cmd(c, "LISTSCRIPTS") == [b'"main" ACTIVE', b'"other"', b'OK "Listscripts completed"']
    assert cmd(c, 'GETSCRIPT "main"') == [b"{%d}\r\n" % len(GOOD) + GOOD, b'OK "Getscript completed"']
    assert cmd(c, 'GETSCRIPT "nope"') == [b'NO (NONEXISTENT) "No such script"']
    assert cmd(c, 'SETACTIVE "nope"') == [b'NO (NONEXISTENT) "No such script"']
    assert cmd(c, 'DELETESCRIPT "main"') == [b'NO (ACTIVE) "The active script cannot be deleted"']
    assert cmd(c, 'RENAMESCRIPT "other" "main"') == [b'NO (ALREADYEXISTS) "A script of that name exists"']
    assert cmd(c, 'RENAMESCRIPT "main" "renamed"') == [b'OK "Script renamed"']
    assert cmd(c, "LISTSCRIPTS") == [b'"other"', b'"renamed" ACTIVE', b'OK "Listscripts completed"']
    assert cmd(c, 'SETACTIVE ""') == [b'OK "Active script set"']
    assert cmd(c, 'DELETESCRIPT "renamed"') == [b'OK "Script deleted"']
    assert cmd(c, "LISTSCRIPTS") == [b'"other"', b'OK "Listscripts completed"']
    assert cmd(c, "UNAUTHENTICATE") == [b'OK "Unauthenticated"']
    assert cmd(c, "LISTSCRIPTS") == [b'NO "LISTSCRIPTS not allowed now: log in first"']
    assert cmd(c, "LOGOUT") == [b'OK "Logout completed"']


def test_a_bad_script_is_refused_with_the_parsers_message(srv):
    c = login(srv)
    broken = b'require "fileinto";\r\nif header :is "subject" "x" {\r\n  fileinto "X";\r\n'
    assert put(c, "broken", broken) == [
        b'NO "line 4: parsing error: end of script reached while right_cbracket expected"'
    ]
    typo = b'require "fileinto";\r\nif headr :is "subject" "x" { keep; }\r\n'
    assert put(c, "typo", typo) == [b'NO "line 2: unknown command headr"']
    notify = b'require "enotify";\r\nkeep;\r\n'
    assert put(c, "notify", notify) == [b'NO "unsupported extension: enotify"']
    assert put(c, "fwd", b'redirect "nowhere";\r\n') == [b'NO "redirect: \'nowhere\' is not an address"']
    c.send_raw(b"CHECKSCRIPT {%d+}\r\n" % len(broken) + broken + b"\r\n")
    assert until_ok(c)[0].startswith(b'NO "line 4:')
    c.send_raw(b"CHECKSCRIPT {%d+}\r\n" % len(GOOD) + GOOD + b"\r\n")
    assert until_ok(c) == [b'OK "Script is valid"']
    assert cmd(c, "LISTSCRIPTS") == [b'OK "Listscripts completed"']  # nothing refused was stored


def test_one_user_never_sees_anothers_scripts(srv):
    alice = login(srv)
    assert put(alice, "secret", GOOD) == [b'OK "Script stored"']
    bob = login(srv, "bob@example.test", "bob-pw")
    assert cmd(bob, "LISTSCRIPTS") == [b'OK "Listscripts completed"']
    assert cmd(bob, 'GETSCRIPT "secret"') == [b'NO (NONEXISTENT) "No such script"']
    assert cmd(bob, 'DELETESCRIPT "secret"') == [b'NO (NONEXISTENT) "No such script"']
    assert cmd(bob, 'RENAMESCRIPT "secret" "mine"') == [b'NO (NONEXISTENT) "No such script"']
    assert cmd(alice, "LISTSCRIPTS") == [b'"secret"', b'OK "Listscripts completed"']


def test_limits_before_and_after_login(srv):
    c = connect(srv)
    big = 9000  # over the preauth literal limit (8192): fatal, the client sends it anyway
    c.send_raw(b'AUTHENTICATE "PLAIN" {%d+}\r\n' % big)
    assert c.line() == b'BYE "Literal too big (the limit is 8192 octets)"'
    assert c.closed()
    c = connect(srv)
    c.send('AUTHENTICATE "PLAIN"')
    assert c.line() == b'""'
    c.send_raw(b"{%d+}\r\n" % big)  # the response as a literal too big: never read as commands
    assert c.line() == b'BYE "Literal too big (the limit is 8192 octets)"'
    assert c.closed()
    c = login(srv)
    assert cmd(c, b'NOOP "' + b"x" * 1100 + b'"')[0].startswith(b'NO "quoted string longer than 1024')
    assert cmd(c, "FROB") == [b'NO "Unknown command FROB"']
    script = b"#" * (64 * 1024 + 1)
    c.send_raw(b'PUTSCRIPT "big" {%d+}\r\n' % len(script))
    assert c.line() == b'BYE "Literal too big (the limit is 65536 octets)"'


def test_bad_commands_in_a_row_end_the_session(srv):
    c = connect(srv)
    for _ in range(srv.settings.max_bad_commands - 1):
        assert cmd(c, "FROB") == [b'NO "Unknown command FROB"']
    assert cmd(c, "FROB") == [b'NO "Unknown command FROB"']
    assert c.line() == b'BYE "Too many invalid commands"'
    assert c.closed()


def test_the_login_throttle_is_shared_with_imap(tmp_path, store):
    srv = Running(settings_for(tmp_path, login_failures_free=0, login_failures_max=3), store)
    try:
        imap = Raw("127.0.0.1", srv.port("imap"))
        imap.line()
        for n in range(3):
            assert imap.cmd(f"a{n}", "LOGIN alice@example.test wrong")[-1].startswith(f"a{n} NO".encode())
        c = connect(srv)  # the same client address, now over ManageSieve: refused unchecked
        assert cmd(c, f'AUTHENTICATE "PLAIN" "{plain()}"') == [
            b'NO (TRYLATER) "Too many failed logins; try again later"'
        ]
    finally:
        srv.stop()


def test_a_silent_client_is_logged_out(tmp_path, store):
    srv = Running(settings_for(tmp_path, preauth_timeout=1.0), store)
    try:
        c = connect(srv)
        c.send_raw(b"LISTSCR")  # and nothing more
        assert c.line() == b'BYE "Autologout; idle for too long"'
        assert c.closed()
    finally:
        srv.stop()


def test_scram_sha_256_with_and_without_an_initial_response(srv):
    from tests.support.scram import Client, end_point

    c = connect(srv)
    client = Client("alice@example.test", "alice-pw")
    c.send(f'AUTHENTICATE "SCRAM-SHA-256" "{client.first()}"')
    challenge = c.line()  # server-first as a string of base64
    c.send(b'"' + client.final(challenge.strip(b'"')).encode() + b'"')
    ok = c.line()
    assert ok.startswith(b'OK (SASL "') and ok.endswith(b'") "Logged in"')
    client.check(ok.split(b'"')[1])  # the server proved it knows the verifier
    assert cmd(c, "LISTSCRIPTS") == [b'OK "Listscripts completed"']

    c = connect(srv)
    wrong = Client("alice@example.test", "wrong")
    c.send('AUTHENTICATE "SCRAM-SHA-256"')
    assert c.line() == b'""'
    c.send(f'"{wrong.first()}"')
    challenge = c.line()
    c.send(b'"' + wrong.final(challenge.strip(b'"')).encode() + b'"')
    assert c.line() == b'NO "Authentication failed (SCRAM e=invalid-proof)"'
    c.send('AUTHENTICATE "SCRAM-SHA-256"')
    assert c.line() == b'""'
    c.send('"*"')
    assert c.line() == b'NO "Authentication cancelled"'

    c = connect(srv)  # -PLUS over STARTTLS, bound to the certificate
    c.send("STARTTLS")
    assert c.line() == b'OK "Begin TLS negotiation now"'
    c.sock = client_tls().wrap_socket(c.sock)
    c.buf = b""
    until_ok(c)
    plus = Client("alice@example.test", "alice-pw", end_point(c.sock))
    c.send(f'AUTHENTICATE "SCRAM-SHA-256-PLUS" "{plus.first()}"')
    challenge = c.line()
    c.send(b'"' + plus.final(challenge.strip(b'"')).encode() + b'"')
    ok = c.line()
    assert ok.startswith(b'OK (SASL "')
    plus.check(ok.split(b'"')[1])
