"""mailflow.store.search.matcher, the one SEARCH evaluator, on hand-made messages (what mailbox-store and
imap-pop3 hand it is checked against the store's SQL in mailbox-store's test_search.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

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
