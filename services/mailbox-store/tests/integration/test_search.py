"""SEARCH in the store selects exactly what the one evaluator (mailflow.store.search.matcher) says.

The store turns what it can into SQL and hands only the rest to the evaluator; this checks the two
never disagree: hundreds of random criteria over messages that differ in every column (flags and
keywords in mixed case, sizes, internal dates, Date: headers in several zones or none, encoded headers
and bodies), each answered by the store and by the evaluator over what the store itself returns.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone

from mailflow import mime
from mailflow.store import search as s

from .conftest import message

WORDS = ["invoice", "Grüße", "GRÜSSE", "köln", "needle", "x-tag: blue", "blue", "", "Rhein", "zzz", "ß", "=C3"]
FLAGS = ["\\Seen", "\\seen", "\\Flagged", "\\Deleted", "\\Answered", "$Work", "$work", "$WORK", "$Never"]
FIELDS = ["subject", "from", "x-tag", "date", "x-missing"]
DAYS = [date(2020, 11, 4), date(2020, 11, 5), date(2020, 11, 6), date(2021, 1, 1), date(2026, 11, 27),
        datetime.now(UTC).date()]  # fmt: skip


def _messages() -> list[tuple[bytes, tuple[str, ...], datetime]]:
    qp = (
        b"From: Carol <carol@elsewhere.test>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus K=?iso-8859-1?q?=F6?=ln\r\n"
        b"Date: Thu, 5 Nov 2020 00:30:00 +0100\r\nX-Tag: Blue\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Sch=C3=B6ne Gr=C3=BC=C3=9Fe vom Rhein\r\n"
    )
    b64 = (
        b"From: Dan <dan@elsewhere.test>\r\nSubject: needle\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"bmVlZGxlIGluIGEgaGF5c3RhY2s=\r\n--b--\r\n"
    )
    bad_date = b"From: x@y.test\r\nSubject: invoice\r\nDate: not a date\r\n\r\nINVOICE 7\r\n"
    cet = timezone(timedelta(hours=1))
    return [
        (message("invoice 42", body="please pay"), ("\\Seen",), datetime(2020, 11, 4, 23, 30, tzinfo=UTC)),
        (qp, ("$Work", "\\Flagged"), datetime(2020, 11, 5, 0, 30, tzinfo=cet)),
        (b64, ("$work", "\\Deleted", "\\Seen"), datetime(2020, 11, 6, tzinfo=UTC)),
        (bad_date, (), datetime(2021, 1, 1, 12, tzinfo=UTC)),
        (message("blue", body="x" * 3000, extra="X-Tag: green\r\nX-Tag: BLUE\r\n"), ("\\Answered",),
         datetime(2026, 11, 27, 23, 59, 59, tzinfo=UTC)),  # fmt: skip
        (b"Subject: Rhein\r\nDate: Sat, 28 Nov 2026 00:30:00 +1400\r\n\r\nriver\r\n", ("$WORK",), datetime(2026, 11, 28, tzinfo=UTC)),
    ]


@dataclass
class Facts:
    """One message as search.Message, made from what the store returns for it (not from its SQL)."""

    uid: int
    flags: frozenset[str]
    modseq: int
    size: int
    internal_date: int
    sent_day: int | None
    saved_at: int | None
    parsed: mime.ParsedMessage
    raw: bytes

    def fields(self) -> s.Fields:
        return s.Fields.of(self.parsed.headers, self.parsed.envelope)

    def texts(self):
        return s.body_texts(self.raw, self.parsed.body)


def random_key(rng: random.Random, uids: list[int], depth: int = 0) -> s.SearchKey:
    kind = rng.choice(["and", "or", "not"] * (depth < 3) + ["uids", "flag", "header", "address", "text", "date", "size", "modseq", "all"] * 2)
    match kind:
        case "and":
            return s.And(tuple(random_key(rng, uids, depth + 1) for _ in range(rng.randint(0, 3))))
        case "or":
            return s.Or(random_key(rng, uids, depth + 1), random_key(rng, uids, depth + 1))
        case "not":
            return s.Not(random_key(rng, uids, depth + 1))
        case "uids":
            n = rng.choice([1, 2, 40])  # 40 ranges: more than SQL takes, so the evaluator checks them
            los = sorted(rng.randint(1, uids[-1] + 2) for _ in range(n))
            return s.Uids(tuple((lo, lo + rng.randint(0, 1)) for lo in los))
        case "flag":
            return s.Flag(rng.choice(FLAGS), rng.random() < 0.7)
        case "header":
            return s.Header(rng.choice(FIELDS), rng.choice(WORDS))
        case "address":
            return s.Address(rng.choice(s.ADDRESS_FIELDS), rng.choice([*WORDS, "carol@", "Dan <dan@", "example.test"]))
        case "text":
            return s.Text(rng.choice(["body", "text"]), rng.choice(WORDS))
        case "date":
            return s.Date(rng.choice(s.DATE_KINDS), rng.choice(["before", "on", "since"]), rng.choice(DAYS))
        case "size":
            return s.Size(rng.choice(["larger", "smaller"]), rng.choice([0, 200, 400, 3000, 10_000]))
        case "modseq":
            return s.ModSeq(rng.randint(1, 30))
    return s.All()


async def test_the_store_and_the_evaluator_agree_on_every_criterion(client, people, service):
    alice, _ = people
    for raw, flags, when in _messages():
        await client.append(alice, "INBOX", raw, flags=frozenset(flags), internal_date=when)
    mb = (await client.status(alice, "INBOX")).id
    uids = await client.search(alice, mb, s.All())
    await client.store_flags(alice, mb, uids[1:3], "add", frozenset({"\\Answered"}))  # modseqs differ
    # save dates (RFC 8514): now for most, one unknown (stored before the store kept them), two on DAYS
    saved = {uids[0]: None, uids[1]: int(datetime(2020, 11, 5, 23, 59, tzinfo=UTC).timestamp()),
             uids[2]: int(datetime(2021, 1, 1, tzinfo=UTC).timestamp())}  # fmt: skip
    sql = "UPDATE messages SET saved_at = :s WHERE mailbox_id = :m AND uid = :u"
    for uid, at in saved.items():
        await service.store.db.write(lambda tx, p={"s": at, "m": mb, "u": uid}: tx.run(sql, p))
    save_dates = await client.fetch_save_dates(alice, mb, uids)
    assert save_dates[uids[0]] is None and save_dates[uids[2]] == datetime(2021, 1, 1, tzinfo=UTC)
    assert all(d is not None and d.year >= 2026 for u, d in save_dates.items() if u not in saved)
    metas = await client.fetch_meta(alice, mb, uids)
    parsed = await client.fetch_parsed(alice, mb, uids)
    bodies = await client.fetch_bodies(alice, mb, uids)
    facts = []
    for m in metas:
        p = mime.from_json(parsed[m.uid])
        sent = s.sent_day(p.envelope.date)
        at = save_dates[m.uid]
        facts.append(
            Facts(m.uid, m.flags, m.modseq, m.size, int(m.internal_date.timestamp()), sent,
                  None if at is None else int(at.timestamp()), p, bodies[m.uid])
        )  # fmt: skip
    assert {f.sent_day for f in facts} >= {None, date(2026, 11, 28).toordinal()}  # no Date:, a bad one, +1400
    rng = random.Random(4313)
    for _ in range(400):
        key = random_key(rng, uids)
        expected = [f.uid for f in facts if s.matcher(key)(f)]
        assert await client.search(alice, mb, key) == expected, key


async def test_from_to_cc_bcc_match_the_parsed_addresses(client, people):
    """FROM/TO/CC/BCC through the stored parse (its envelope) and the header cache: display names with
    RFC 2047 words, quoted local parts, groups, comments, several addresses in a field."""
    alice, _ = people
    raw = (
        b'From: "Doe, \\"JD\\" John" <John.Doe@Example.TEST>\r\n'
        b'To: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@muenchen.test>, "smith jr"@quoted.test,\r\n'
        b"  Undisclosed: alice@a.test, bob@b.test;\r\n"
        b"Cc: root@cron.test (Cron Daemon), Ann (the boss) Lee <ann@lee.test>\r\n"
        b"Bcc: =?iso-8859-1?q?Fran=E7ois?= <f@fr.test>\r\nSubject: addresses\r\n\r\nbody\r\n"
    )
    await client.append(alice, "INBOX", message("plain"))
    await client.append(alice, "INBOX", raw)
    mb = (await client.status(alice, "INBOX")).id
    plain, addressed = await client.search(alice, mb, s.All())
    for _ in range(2):  # the second time from the header cache
        for field, needle in [
            ("from", 'doe, "jd" john'), ("from", '"JD" John <john.doe@example'), ("to", "jörg müller <joerg"),
            ("to", "smith jr@quoted.test"), ("to", "undisclosed"), ("to", "BOB@B.TEST"), ("cc", "cron daemon"),
            ("cc", "ann lee <ann@"), ("bcc", "françois"),
        ]:  # fmt: skip
            assert await client.search(alice, mb, s.Address(field, needle)) == [addressed], (field, needle)
        assert await client.search(alice, mb, s.Address("from", "carol <carol@elsewhere")) == [plain]
        assert await client.search(alice, mb, s.Address("to", "john.doe")) == []
        assert await client.search(alice, mb, s.Header("from", 'doe, "jd" john')) == []  # HEADER: the text
        assert await client.search(alice, mb, s.Not(s.Address("cc", "lee"))) == [plain]
