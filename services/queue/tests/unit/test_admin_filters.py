"""GET /queue's filters as the database sees them (mailflow_queue.admin.list_messages on SQLite).

Sender and recipient match whole addresses without regard to case, domain the recipients' domain, as
text: a `%` or `_` in the input is a character, never a wildcard; ages count back from `now`.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from mailflow_queue.admin import Filters, list_messages
from mailflow_queue.db import Base, Message, Recipient

NOW = 1_000_000.0


def session() -> Session:
    engine = sa.create_engine("sqlite://")
    Base.metadata.create_all(engine)
    s = Session(engine)
    rows = [
        ("Q1", "Ann@Example.test", ["bob@corp.test", "eve@other.test"], 10, "queued"),
        ("Q2", "", ["BOB@corp.test"], 4000, "deferred"),
        ("Q3", "ann@example.test", ["x@co_p.test"], 100, "held"),
        ("Q4", "ann@example.test", ["bob@corp.test"], 50, "delivered"),
    ]
    for qid, sender, rcpts, age, state in rows:
        s.add(Message(queue_id=qid, mail_from=sender, body_ref="inline:x", received_at=NOW - age))
        for a in rcpts:
            s.add(Recipient(queue_id=qid, address=a, address_key=a.lower(), state=state, updated_at=NOW))
    s.commit()
    return s


def ids(s: Session, state: str | None = None, **f: str | float) -> list[str]:
    return [m.queue_id for m in list_messages(s, state, 0, 100, Filters(**f), NOW).items]


def test_each_filter_narrows_the_list():
    s = session()
    assert ids(s) == ["Q2", "Q3", "Q1"]  # not final, oldest first
    assert ids(s, sender="ann@example.TEST") == ["Q3", "Q1"]
    assert ids(s, sender="<>") == ["Q2"]
    assert ids(s, recipient="Bob@Corp.test") == ["Q2", "Q1"]
    assert ids(s, "delivered", recipient="bob@corp.test") == ["Q4"]
    assert ids(s, "any", recipient="bob@corp.test") == ["Q2", "Q4", "Q1"]
    assert ids(s, domain="CORP.test") == ["Q2", "Q1"]
    assert ids(s, domain="other.test", sender="ann@example.test") == ["Q1"]
    assert ids(s, min_age=60) == ["Q2", "Q3"]
    assert ids(s, max_age=60) == ["Q1"]
    assert list_messages(s, None, 0, 1, Filters(domain="corp.test"), NOW).total == 2


def test_wildcards_in_the_input_are_plain_characters():
    s = session()
    assert ids(s, domain="co_p.test") == ["Q3"]
    assert ids(s, domain="c%") == []
    assert ids(s, domain="co%p.test") == []
    assert ids(s, domain="corp_test") == []
    assert ids(s, recipient="%") == [] and ids(s, sender="%") == []


def test_many_matches_are_listed_alike(monkeypatch):
    from mailflow_queue import admin

    s = session()
    few = [ids(s), ids(s, recipient="bob@corp.test"), ids(s, "any", domain="corp.test")]
    monkeypatch.setattr(admin, "FEW", 0)  # every list now walks the messages in arrival order
    assert [ids(s), ids(s, recipient="bob@corp.test"), ids(s, "any", domain="corp.test")] == few


def test_a_page_near_the_end_is_the_same_page():
    s = session()
    whole = ids(s, "any")
    assert len(whole) == 4
    for offset in range(6):
        for limit in (1, 2, 3):
            page = [m.queue_id for m in list_messages(s, "any", offset, limit, Filters(), NOW).items]
            assert page == whole[offset : offset + limit], (offset, limit)


def test_message_id_matches_with_or_without_its_brackets():
    s = session()
    s.get(Message, "Q3").message_id = "<abc.123@example.test>"
    s.commit()
    assert ids(s, message_id="<abc.123@example.test>") == ["Q3"]
    assert ids(s, message_id="abc.123@example.test") == ["Q3"]
    assert ids(s, message_id="abc") == [] and ids(s, message_id="%") == []


def test_header_fields_are_unfolded_and_bounded():
    from mailflow_queue.admin import MAX_HEADER_FIELDS, header_fields

    raw = b"Subject: a\r\n long one\r\nFrom: <a@b.test>\r\nbroken line\r\n\r\nNot: a header\r\n"
    assert header_fields(raw) == [("Subject", "a long one"), ("From", "<a@b.test>")]
    assert header_fields(b"\r\nBody: only\r\n") == []
    assert len(header_fields(b"X: 1\r\n" * 5000)) == MAX_HEADER_FIELDS
    assert header_fields(b"Subject: \xff\r\n\r\n") == [("Subject", "\ufffd")]
