"""IMAP URLs (RFC 5092) as CATENATE reads them: the forms that name a message or a section, and the ones
refused; hostile input never raises anything but BadUrl."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailflow_imap_pop3.imap.syntax import Section
from mailflow_imap_pop3.imap.urls import MAX_URL, BadUrl, MessageUrl, echo, parse


@pytest.mark.parametrize(
    "url, expected",
    [
        ("/INBOX/;UID=3", MessageUrl(None, None, "INBOX", None, 3)),
        ("/inbox;UIDVALIDITY=7/;uid=3/;section=1.2", MessageUrl(None, None, "INBOX", 7, 3, Section((1, 2)))),
        (
            "/Work/Sub%C3%A9;UIDVALIDITY=7/;UID=3/;SECTION=HEADER.FIELDS%20(SUBJECT%20FROM)/;PARTIAL=0.10",
            MessageUrl(
                None, None, "Work/Subé", 7, 3, Section((), "HEADER.FIELDS", ("SUBJECT", "FROM")), (0, 10)
            ),
        ),
        (
            "IMAP://alice%40example.test;AUTH=*@Mail.Example.test:143/INBOX/;UID=9/;SECTION=2.MIME/;PARTIAL=5",
            MessageUrl(
                "alice@example.test", "mail.example.test", "INBOX", None, 9, Section((2,), "MIME"), (5, None)
            ),
        ),
    ],
)
def test_message_urls(url, expected):
    assert parse(url) == expected


def test_relative_to_the_selected_mailbox():
    assert parse(";UID=4/;SECTION=TEXT", ("Archive", 12)) == MessageUrl(
        None, None, "Archive", 12, 4, Section((), "TEXT")
    )
    with pytest.raises(BadUrl):
        parse(";UID=4")  # nothing selected


@pytest.mark.parametrize(
    "url",
    [
        "", "INBOX", "/INBOX", "/INBOX/", "/INBOX;UIDVALIDITY=7", "/INBOX;UIDVALIDITY=7/;UID=0",
        "/INBOX/;UID=4294967296", "/INBOX/;UID=1x", "/INBOX/;UID=1;SECTION=1", "/INBOX/;SECTION=1/;UID=1",
        "/INBOX/;UID=1/;UID=2", "/INBOX/;UID=1/;SECTION=1.2.", "/INBOX/;UID=1/;SECTION=%5D", "/INBOX/;UID=1/",
        "/INBOX/;UID=1/;URLAUTH=anonymous:internal:00", "/INBOX/;UID=1/;EXPIRE=2026-01-01T00:00:00Z",
        "/INBOX?SUBJECT%20x", "/INBOX/;UID=1#x", "/%ff/;UID=1", "/%4/;UID=1", "/IN BOX/;UID=1",
        "imap://host/INBOX/;UID=1", "imap://@host/INBOX/;UID=1", "imap://alice@/INBOX/;UID=1",
        "imap://alice@host:x/INBOX/;UID=1", "imap://alice@host", "http://alice@host/INBOX/;UID=1",
        "/INBOX/;UID=1/;SECTION=" + ".".join(["1"] * 101), "/" + "a" * MAX_URL + "/;UID=1",
        "/INBOX/;UID=1/;PARTIAL=1.0", "/INBOX/;UID=1/;PARTIAL=-1",
    ],
)  # fmt: skip
def test_refused(url):
    with pytest.raises(BadUrl):
        parse(url)


def test_echo_keeps_the_response_code_whole():
    assert echo("/INBOX]\r\n x") == "/INBOX%5D%0D%0A%20x"
    assert len(echo("a" * 10 * MAX_URL)) == MAX_URL


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120), st.sampled_from(["", "/INBOX/;UID=1", "imap://a@b/INBOX;UIDVALIDITY=1/;UID=1"]))
def test_junk_is_bad_url_or_a_message(junk, prefix):
    try:
        url = parse(prefix + junk, ("INBOX", 1))
    except BadUrl:
        return
    assert isinstance(url, MessageUrl) and url.uid > 0
