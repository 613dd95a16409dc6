"""The command table and the states (RFC 5321 §4.1.4, RFC 3030): which command runs where, and what
one sent out of sequence gets, for every state and verb. The transcripts are in tests/protocol/."""

from __future__ import annotations

import pytest

from mailflow.store.api import Principal
from mailflow_smtp_ingress import replies as R
from mailflow_smtp_ingress.session import COMMANDS, COMMANDS_NO_AUTH, Session
from mailflow_smtp_ingress.state import ANY, Client, State

S = State
RUNS = {
    "EHLO": ANY, "HELO": ANY, "RSET": ANY, "NOOP": ANY, "VRFY": ANY, "EXPN": ANY, "HELP": ANY, "QUIT": ANY,
    "STARTTLS": ANY,
    "MAIL": S.READY,
    "RCPT": S.MAIL | S.RCPT,
    "DATA": S.RCPT,
    "BDAT": S.RCPT | S.BDAT,
    "AUTH": S.READY,
}  # fmt: skip

OUT_OF_SEQUENCE = [
    (S.GREETED, "MAIL", R.R503_HELO_FIRST),
    (S.GREETED, "RCPT", R.R503_NEED_MAIL),
    (S.GREETED, "DATA", R.R503_HELO_FIRST),
    (S.GREETED, "BDAT", R.R503_HELO_FIRST),
    (S.GREETED, "AUTH", R.R503_HELO_FIRST),
    (S.READY, "RCPT", R.R503_NEED_MAIL),
    (S.READY, "DATA", R.R503_NEED_MAIL),
    (S.READY, "BDAT", R.R503_NEED_MAIL),
    (S.MAIL, "MAIL", R.R503_NESTED_MAIL),
    (S.MAIL, "DATA", R.R554_NO_VALID_RECIPIENTS),
    (S.MAIL, "BDAT", R.R554_NO_VALID_RECIPIENTS),
    (S.MAIL, "AUTH", R.R503_AUTH_IN_TRANSACTION),
    (S.RCPT, "MAIL", R.R503_NESTED_MAIL),
    (S.RCPT, "AUTH", R.R503_AUTH_IN_TRANSACTION),
    (S.BDAT, "MAIL", R.R503_NESTED_MAIL),
    (S.BDAT, "RCPT", R.R503_MIXED_DATA_BDAT),
    (S.BDAT, "DATA", R.R503_MIXED_DATA_BDAT),
    (S.BDAT, "AUTH", R.R503_AUTH_IN_TRANSACTION),
]


class Server:
    def __init__(self, settings):
        self.settings, self.handler, self.buffer_limit = settings, None, 1 << 20


def test_the_table_says_where_each_command_runs():
    assert {verb: spec.states for verb, spec in COMMANDS.items()} == RUNS
    assert COMMANDS_NO_AUTH["AUTH"].states == ANY  # 502 wherever it is sent
    for spec in COMMANDS.values():
        assert spec.allowed == {st for st in State if st in spec.states}
        assert State.DATA not in spec.allowed  # no command runs while message octets come


@pytest.mark.parametrize("state, verb, reply", OUT_OF_SEQUENCE)
async def test_out_of_sequence(settings_factory, state, verb, reply):
    s = Session(Server(settings_factory()), "submission")
    s.client, s.state = Client("x", "submission", "192.0.2.1", helo="" if state is S.GREETED else "c.test"), state
    assert state not in COMMANDS[verb].allowed
    assert s.out_of_sequence(verb) == reply


async def test_every_refusal_is_a_503_or_a_554(settings_factory):
    s = Session(Server(settings_factory()), "submission")
    s.client = Client("x", "submission", "192.0.2.1", helo="c.test")
    for state in ANY:
        s.state = state
        for verb, spec in COMMANDS.items():
            if state not in spec.allowed:
                assert s.out_of_sequence(verb).code in (503, 554), (state, verb)


async def test_auth_in_a_transaction_after_auth_is_already_authenticated(settings_factory):
    s = Session(Server(settings_factory()), "submission")
    s.client = Client("x", "submission", "192.0.2.1", helo="c.test", principal=Principal(1, "a@b.test"))
    s.state = S.RCPT
    assert s.out_of_sequence("AUTH") == R.R503_ALREADY_AUTH


async def test_the_mx_listener_offers_auth_only_with_mx_auth(settings_factory):
    assert Session(Server(settings_factory()), "mx").commands is COMMANDS_NO_AUTH
    assert Session(Server(settings_factory(mx_auth=True)), "mx").commands is COMMANDS
    assert Session(Server(settings_factory()), "smtps").commands is COMMANDS
