"""mailflow.store.search.matcher, the one SEARCH evaluator, on hand-made messages (what mailbox-store and
imap-pop3 hand it is checked against the store's SQL in mailbox-store's test_search.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from mailflow import mime
from mailflow.store import search as s


class Msg:
    def __init__(self, uid=1, flags=(), size=100, when=datetime(2020, 11, 4, 23, 30, tzinfo=UTC), sent=None, body=None):
        self.uid, self.flags, self.modseq, self.size = uid, frozenset(flags), 5, size
        self.internal_date = int(when.timestamp())
        self.sent_day = s.sent_day(sent)
        self._body = body

    def fields(self) -> s.Fields:
        return s.Fields.of((("subject", "Grüße"), ("x-tag", "a"), ("x-tag", "B")))

    def texts(self):
        if self._body is None:
            raise OSError("blob segment missing")
        return [self._body]


@pytest.mark.parametrize(
    "key, expected",
    [
        (s.Flag("$label"), True),  # case-insensitive, keywords and system flags alike
        (s.Flag("\\SEEN"), True),
        (s.Flag("$label", present=False), False),
        (s.Header("subject", "GRÜSSE"), True),  # casefold: ß is ss
        (s.Header("x-tag", "b"), True),  # every occurrence of the field
        (s.Header("x-tag", ""), True),
        (s.Header("x-other", ""), False),
        (s.Text("text", "x-tag: b"), True),
        (s.Date("internal", "on", date(2020, 11, 4)), True),  # the UTC day
        (s.Date("internal", "since", date(2020, 11, 5)), False),
        (s.Date("sent", "on", date(2020, 11, 5)), True),  # the header's own zone
        (s.Date("sent", "before", date(2020, 11, 5)), False),
        (s.Size("larger", 100), False),
        (s.Size("smaller", 101), True),
        (s.Uids(tuple((u, u) for u in range(3, 200, 2))), False),
        (s.Uids(tuple((u, u) for u in range(1, 200, 2))), True),
        (s.ModSeq(5), True),
    ],
)
def test_criteria(key, expected):
    msg = Msg(flags=("$Label", "\\Seen"), sent="Thu, 5 Nov 2020 00:30:00 +0100", body="hello")
    assert s.matcher(key)(msg) is expected
    assert s.matcher(s.Not(key))(msg) is not expected


def test_a_message_without_a_date_matches_no_sent_criterion_and_an_unreadable_body_no_text():
    msg = Msg(sent="not a date")
    assert msg.sent_day is None
    assert not any(s.matcher(s.Date("sent", op, date(2020, 1, 1)))(msg) for op in ("before", "on", "since"))
    assert s.matcher(s.Text("body", "hello"))(msg) is False  # logged, never an error for the search
    assert s.matcher(s.Not(s.Text("body", "hello")))(msg) is True


def test_flags_only_is_what_a_view_can_answer():
    assert s.flags_only(s.And((s.Flag("\\Seen"), s.Or(s.Uids(((1, 2),)), s.Not(s.All())))))
    assert not s.flags_only(s.And((s.Flag("\\Seen"), s.Size("larger", 1))))


ADDRESSED = (
    b'From: "Doe, \\"JD\\" John" <John.Doe@Example.TEST>\r\n'
    b'To: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@muenchen.test>, "smith jr"@quoted.test,\r\n'
    b"  Undisclosed: alice@a.test, bob@b.test;\r\n"
    b"Cc: root@cron.test (Cron Daemon), Ann (the boss)\r\n Lee <ann@lee.test>\r\n"
    b"Bcc: =?iso-8859-1?q?Fran=E7ois?= <f@fr.test>\r\nSubject: addresses\r\n\r\nbody\r\n"
)


class Addressed(Msg):
    def __init__(self):
        super().__init__()
        self.parsed = mime.parse(ADDRESSED)

    def fields(self) -> s.Fields:
        return s.Fields.of(self.parsed.headers, self.parsed.envelope)


@pytest.mark.parametrize(
    "field, needle, expected",
    [
        ("from", 'doe, "jd" john', True),  # the display name, unquoted and unescaped
        ("from", '"JD" John <john.doe@example', True),  # name <local@domain>
        ("from", "JOHN.DOE@example.test", True),
        ("from", '\\"JD\\"', True),  # the header's own text too
        ("from", "joerg", False),  # only its own field
        ("to", "jörg müller", True),  # RFC 2047 in the display name
        ("to", "JÖRG MÜLLER <joerg@", True),
        ("to", "smith jr@quoted.test", True),  # a quoted local part, unquoted
        ("to", '"smith jr"@quoted', True),  # and as written
        ("to", "undisclosed", True),  # a group's name
        ("to", "bob@b.test", True),  # every address of the field, groups' members too
        ("to", "alice@b.test", False),
        ("to", "john.doe", False),
        ("cc", "cron daemon", True),  # a comment is the only name of a bare address
        ("cc", "ann lee <ann@lee.test>", True),  # the comment inside the name is no part of it
        ("cc", "the boss", True),  # but it is in the header's text
        ("cc", "root@cron.test", True),
        ("bcc", "françois", True),
        ("bcc", "FRANÇOIS <f@fr", True),
        ("bcc", "", True),
        ("cc", "nobody", False),
    ],
)
def test_address_criteria_match_every_form_an_address_takes(field, needle, expected):
    msg = Addressed()
    assert s.matcher(s.Address(field, needle))(msg) is expected
    assert s.from_obj(s.to_obj(s.Address(field, needle))) == s.Address(field, needle)


def test_header_from_stays_the_header_text():
    """HEADER FROM is the text after the colon (RFC 3501 §6.4.4), not the parsed addresses."""
    msg = Addressed()
    assert s.matcher(s.Header("from", '\\"jd\\" john'))(msg)
    assert not s.matcher(s.Header("from", '"jd" john <john.doe'))(msg)
    assert not s.matcher(s.Address("to", "x"))(Msg())  # no such field: no match
    with pytest.raises(ValueError):
        s.from_obj({"k": "address", "field": "subject", "value": "x"})
