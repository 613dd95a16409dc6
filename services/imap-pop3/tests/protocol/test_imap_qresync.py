"""QRESYNC (RFC 7162 §3.2) over a real socket: ENABLE QRESYNC, SELECT/EXAMINE (QRESYNC (...)) answered with
VANISHED (EARLIER) and FETCH of what changed, UID FETCH (CHANGEDSINCE m VANISHED), VANISHED instead of
EXPUNGE (EXPUNGE, UID EXPUNGE, MOVE, another session's expunge heard at NOOP and in IDLE), [CLOSED],
the HIGHESTMODSEQ sent while an expunge is held back; the BADs; hostile parameters (huge or mismatched
sets) answered quickly; and the answer when the store pruned the tombstones the client would need."""

from __future__ import annotations

import re
import time

from imaptest import Raw, make_message

from mailflow_mailbox_store import maintenance


def login(srv, qresync: bool = True) -> Raw:
    c = Raw("127.0.0.1", srv.port("imap"))
    c.line()
    c.cmd("a0", "LOGIN alice@example.test alice-pw")
    if qresync:
        assert c.cmd("e0", "ENABLE QRESYNC") == [b"* ENABLED QRESYNC", b"e0 OK ENABLE completed"]
    return c


def fill(srv, n):
    for i in range(n):
        srv.deliver("alice@example.test", make_message(f"m{i}"))


def state(c: Raw, cmd: str = "SELECT INBOX") -> tuple[int, int, list[bytes]]:
    """(UIDVALIDITY, HIGHESTMODSEQ, the response lines) of a SELECT."""
    lines = c.cmd("s", cmd)
    assert lines[-1].startswith(b"s OK"), lines
    text = b"\n".join(lines)
    uv = int(re.search(rb"UIDVALIDITY (\d+)", text).group(1))
    hm = int(re.search(rb"HIGHESTMODSEQ (\d+)", text).group(1))
    return uv, hm, lines


def changes_by_another_session(srv) -> None:
    """UID 2 gets \\Flagged, UIDs 3 and 5 are expunged, UID 7 arrives."""
    b = login(srv, qresync=False)
    b.cmd("b1", "SELECT INBOX")
    b.cmd("b2", "UID STORE 2 +FLAGS.SILENT (\\Flagged)")
    b.cmd("b3", "UID STORE 3,5 +FLAGS.SILENT (\\Deleted)")
    b.cmd("b4", "EXPUNGE")
    b.close()
    fill(srv, 1)


def resync_lines(lines: list[bytes]) -> list[bytes]:
    return [x for x in lines if x.startswith(b"* VANISHED") or b" FETCH " in x]


def test_capability_enable_and_the_bads(srv):
    c = login(srv, qresync=False)
    assert b" QRESYNC" in c.cmd("c1", "CAPABILITY")[0]
    fill(srv, 2)
    c.cmd("c2", "SELECT INBOX")
    # without ENABLE QRESYNC: BAD, and the selected mailbox stays selected
    assert c.cmd("c3", "SELECT INBOX (QRESYNC (1 1))")[-1].startswith(
        b"c3 BAD QRESYNC parameter without ENABLE"
    )
    assert c.cmd("c4", "UID FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)")[-1].startswith(
        b"c4 BAD VANISHED without"
    )
    assert c.cmd("c5", "FETCH 1 FLAGS")[-1] == b"c5 OK FETCH completed"
    c.cmd("c6", "UNSELECT")
    assert c.cmd("c7", "ENABLE QRESYNC CONDSTORE") == [
        b"* ENABLED QRESYNC CONDSTORE",
        b"c7 OK ENABLE completed",
    ]
    c.cmd("c8", "SELECT INBOX")
    assert (
        c.cmd("c9", "FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)")[-1]
        == b"c9 BAD VANISHED is a UID FETCH modifier"
    )
    assert c.cmd("d1", "UID FETCH 1 FLAGS (VANISHED)")[-1].startswith(b"d1 BAD VANISHED needs CHANGEDSINCE")


def test_select_qresync_sends_only_what_changed(srv):
    fill(srv, 6)
    a = login(srv)
    uv, hm, _ = state(a)
    a.close()
    changes_by_another_session(srv)
    c = login(srv)
    _, now, lines = state(c, f"SELECT INBOX (QRESYNC ({uv} {hm} 1:6))")
    assert b"* 5 EXISTS" in lines and now > hm
    got = resync_lines(lines)
    assert got[0] == b"* VANISHED (EARLIER) 3,5"
    assert [re.sub(rb"MODSEQ \(\d+\)", b"MODSEQ (m)", x) for x in got[1:]] == [
        b"* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ (m))",
        b"* 5 FETCH (UID 7 FLAGS (\\Recent) MODSEQ (m))",
    ]
    assert all(int(m) > hm for m in re.findall(rb"MODSEQ \((\d+)\)", b"".join(got)))
    # EXAMINE, no known UIDs: the same; known UIDs 1:2 leave the expunged 3 and 5 out
    assert resync_lines(state(c, f"EXAMINE INBOX (QRESYNC ({uv} {hm}))")[2])[0] == b"* VANISHED (EARLIER) 3,5"
    lines = state(c, f"SELECT INBOX (QRESYNC ({uv} {hm} 1:2))")[2]
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed"
    assert [x for x in lines if x.startswith(b"* VANISHED")] == []
    # nothing changed since: nothing but the usual responses; another UIDVALIDITY: nothing either
    assert resync_lines(state(c, f"SELECT INBOX (QRESYNC ({uv} {now}))")[2]) == []
    assert resync_lines(state(c, f"SELECT INBOX (QRESYNC ({uv + 1} 1))")[2]) == []


def test_uid_fetch_changedsince_vanished(srv):
    fill(srv, 6)
    a = login(srv)
    uv, hm, _ = state(a)
    changes_by_another_session(srv)
    c = login(srv)
    state(c)
    lines = c.cmd("f1", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hm} VANISHED)")
    assert lines[0] == b"* VANISHED (EARLIER) 3,5"
    assert [x.split(b" MODSEQ")[0] for x in lines[1:-1]] == [
        b"* 2 FETCH (UID 2 FLAGS (\\Flagged)",
        b"* 5 FETCH (UID 7 FLAGS (\\Recent)",
    ]
    assert c.cmd("f2", f"UID FETCH 4:6 (FLAGS) (CHANGEDSINCE {hm} VANISHED)") == [
        b"* VANISHED (EARLIER) 5",
        b"f2 OK UID FETCH completed",
    ]
    # a: 3 and 5 are still numbered in its view: the command's own answer leaves them to the VANISHED
    # that removes them, which comes at its end (UID commands may announce expunges)
    lines = a.cmd("f3", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hm} VANISHED)")
    assert b"* VANISHED (EARLIER)" not in b"".join(lines)
    assert b"* VANISHED 3,5" in lines


def test_vanished_replaces_expunge_everywhere(srv):
    fill(srv, 8)
    c = login(srv)
    c.cmd("s", "SELECT INBOX")
    other = login(srv)
    other.cmd("s", "SELECT INBOX")
    plain = login(srv, qresync=False)
    plain.cmd("s", "SELECT INBOX")
    c.cmd("a1", "STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    assert c.cmd("a2", "EXPUNGE") == [b"* VANISHED 2,4", b"a2 OK EXPUNGE completed"]
    c.cmd("a3", "UID STORE 5:6 +FLAGS.SILENT (\\Deleted)")
    assert c.cmd("a4", "UID EXPUNGE 5:8") == [b"* VANISHED 5:6", b"a4 OK UID EXPUNGE completed"]
    lines = c.cmd("a5", "UID MOVE 7 Trash")
    assert lines[1:] == [b"* VANISHED 7", b"a5 OK UID MOVE completed"]
    assert c.cmd("a6", "UID SEARCH ALL")[0] == b"* SEARCH 1 3 8"
    # another QRESYNC session hears VANISHED, a plain one EXPUNGE by number
    assert b"* VANISHED 2,4:7" in other.cmd("o1", "NOOP")
    expunges = [x for x in plain.cmd("p1", "NOOP") if x.endswith(b"EXPUNGE")]
    assert expunges == [b"* 2 EXPUNGE", b"* 3 EXPUNGE", b"* 3 EXPUNGE", b"* 3 EXPUNGE", b"* 3 EXPUNGE"]
    # in IDLE, at once (the \Deleted may come first as a FETCH, if it was heard apart)
    other.send("i1 IDLE")
    assert other.line() == b"+ idling"
    c.cmd("a7", "UID STORE 3 +FLAGS.SILENT (\\Deleted)")
    c.cmd("a8", "EXPUNGE")
    heard = [other.line()]
    if heard[0] != b"* VANISHED 3":
        heard.append(other.line())
    assert heard[-1] == b"* VANISHED 3" and all(b"EXPUNGE" not in x for x in heard)
    other.send("DONE")
    assert other.until("i1")[-1] == b"i1 OK IDLE terminated"


def test_hostile_parameters_are_bounded_and_bad_when_wrong(srv):
    fill(srv, 3)
    c = login(srv)
    uv, hm, _ = state(c)
    many = ",".join(str(n) for n in range(1, 20_000, 2))  # 10,000 ranges, ~54 KB of the 64 KiB line limit
    half = ",".join(str(n) for n in range(1, 10_000, 2))
    for param, ok in (
        (f"({uv} 1 1:4294967295)", True),
        (f"({uv} 1 {many})", True),
        (f"({uv} 1 1:4294967295 (1:4294967295 1:4294967295))", True),
        (f"({uv} 1 ({half} {half}))", True),
        (f"({uv} 1 1:3 (1:2 1:3))", False),  # the two match sets name different counts
        (f"({uv} 1 1:*)", False),  # '*' is not allowed in known UIDs
        (f"({uv} 1 (1:* 1:3))", False),
        (f"(0 {hm})", False),  # UIDVALIDITY is a nz-number
        (f"({uv} 9223372036854775808)", False),  # past the 63-bit mod-sequence range
        (f"({uv} 1 3:1 (1 2 3))", False),
        (f"({uv})", False),
        (f"({uv} 1 1:3 (1 1) extra)", False),
    ):
        t0 = time.perf_counter()
        lines = c.cmd("h", f"SELECT INBOX (QRESYNC {param})")
        took = time.perf_counter() - t0
        assert lines[-1].startswith(b"h OK" if ok else b"h BAD"), (param[:60], lines[-1])
        assert took < 1.0, (param[:60], took)
    assert c.cmd("h2", f"SELECT INBOX (QRESYNC ({uv} 1) QRESYNC ({uv} 1))")[-1].startswith(b"h2 BAD")


def test_pruned_tombstones_report_every_known_uid_not_present(srv, local_store):
    """The store kept too few tombstones: the answer is every known UID not there now (never fewer),
    narrowed by the client's sequence match data (its message 1 was UID 2 and still is: UID 1 had gone
    before, RFC 7162 §3.2.5.2)."""
    fill(srv, 6)
    a = login(srv)
    uv, hm, _ = state(a)
    a.cmd("x1", "UID STORE 1,3,5 +FLAGS.SILENT (\\Deleted)")
    a.cmd("x2", "UID EXPUNGE 1")
    a.cmd("x3", "UID EXPUNGE 3")
    a.cmd("x4", "UID EXPUNGE 5")
    local_store.call(local_store.core.db.write(maintenance.purge_tombstones, 1))  # only 5's is left
    c = login(srv)
    lines = state(c, f"SELECT INBOX (QRESYNC ({uv} {hm} 1:6))")[2]
    assert [x for x in lines if x.startswith(b"* VANISHED")] == [b"* VANISHED (EARLIER) 1,3,5"]
    lines = state(c, f"SELECT INBOX (QRESYNC ({uv} {hm} 1:6 (1 2)))")[2]
    assert [x for x in lines if x.startswith(b"* VANISHED")] == [b"* VANISHED (EARLIER) 3,5"]
    lines = state(c, f"SELECT INBOX (QRESYNC ({uv} {hm} 1:6 (2 2)))")[2]  # seq 2 is UID 4 now: no help
    assert [x for x in lines if x.startswith(b"* VANISHED")] == [b"* VANISHED (EARLIER) 1,3,5"]
    # UID FETCH VANISHED falls back the same way
    assert (
        c.cmd("f", f"UID FETCH 1:6 (FLAGS) (CHANGEDSINCE {hm} VANISHED)")[0] == b"* VANISHED (EARLIER) 1,3,5"
    )


def test_a_held_back_expunge_lowers_the_highestmodseq_the_client_keeps(srv):
    """During FETCH an expunge waits (the message keeps its number) while a later flag change is shown
    with its MODSEQ: `* OK [HIGHESTMODSEQ n]` below the expunge follows, so a client that resyncs from
    n still hears of it (RFC 7162 §3.2)."""
    fill(srv, 4)
    c = login(srv)
    uv, hm, _ = state(c)
    b = login(srv, qresync=False)
    b.cmd("b1", "SELECT INBOX")
    b.cmd("b2", "UID STORE 3 +FLAGS.SILENT (\\Deleted)")
    b.cmd("b3", "UID EXPUNGE 3")
    b.cmd("b4", "UID STORE 4 +FLAGS.SILENT (\\Flagged)")
    lines = c.cmd("c1", "FETCH 1 (FLAGS)")
    assert b"VANISHED" not in b"".join(lines)
    assert lines[-2:] == [b"* OK [HIGHESTMODSEQ %d] Expunges held back" % hm, b"c1 OK FETCH completed"]
    assert any(x.startswith(b"* 4 FETCH (UID 4 FLAGS (\\Flagged") for x in lines)
    assert c.cmd("c2", "NOOP") == [b"* VANISHED 3", b"c2 OK NOOP completed"]
    d = login(srv)
    assert resync_lines(state(d, f"EXAMINE INBOX (QRESYNC ({uv} {hm}))")[2])[0] == b"* VANISHED (EARLIER) 3"


def test_a_session_that_slept_through_pruned_tombstones_still_hears_every_expunge(srv, local_store):
    """The store pruned tombstones past the view's MODSEQ: the session asks which of its UIDs are still
    there and tells the rest (VANISHED here, EXPUNGE to a plain session)."""
    fill(srv, 5)
    c = login(srv)
    c.cmd("s", "SELECT INBOX")
    plain = login(srv, qresync=False)
    plain.cmd("s", "SELECT INBOX")
    b = login(srv, qresync=False)
    b.cmd("b1", "SELECT INBOX")
    b.cmd("b2", "UID STORE 1,2,4 +FLAGS.SILENT (\\Deleted)")
    for u in (1, 2, 4):
        b.cmd("b3", f"UID EXPUNGE {u}")
    local_store.call(local_store.core.db.write(maintenance.purge_tombstones, 1))  # only 4's is left
    assert c.cmd("c1", "NOOP") == [b"* VANISHED 1:2,4", b"c1 OK NOOP completed"]
    assert plain.cmd("p1", "NOOP") == [
        b"* 1 EXPUNGE",
        b"* 1 EXPUNGE",
        b"* 2 EXPUNGE",
        b"p1 OK NOOP completed",
    ]
    assert c.cmd("c2", "UID SEARCH ALL")[0] == b"* SEARCH 3 5"
