"""mailflow.log: batched writes keep order, WARNING goes out at once, nothing waits past the delay."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

from mailflow import log as mlog
from tests.support import wait_for


class Counting(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


def logger_with(handler: logging.Handler) -> logging.Logger:
    lg = logging.getLogger(f"test.log.{id(handler)}")
    lg.handlers[:] = [handler]
    lg.propagate = False
    lg.setLevel(logging.INFO)
    handler.setFormatter(mlog.TextFormatter())
    handler.addFilter(mlog._ContextFilter())
    return lg


def test_info_lines_share_one_write_within_the_delay_and_keep_their_order():
    out = Counting()
    handler = mlog.BatchedHandler(out, delay=0.05)
    lg = logger_with(handler)
    for n in range(100):
        with mlog.context(queue_id=f"Q{n}"):
            lg.info("queued", extra={"n": n})
    assert out.getvalue() == ""  # nothing written yet: the batch waits for its delay
    wait_for(lambda: out.getvalue().count("\n") == 100, timeout=2, what="the batch")
    assert out.writes == 1
    lines = out.getvalue().splitlines()
    assert [ln.split("queue_id=")[1].rstrip("]") for ln in lines] == [f"Q{n}" for n in range(100)]


def test_a_warning_writes_at_once_after_the_lines_before_it():
    out = Counting()
    lg = logger_with(mlog.BatchedHandler(out, delay=10.0))
    lg.info("first")
    lg.warning("second")
    text = out.getvalue()
    assert text.index("first") < text.index("second")
    assert out.writes == 1


def test_a_full_buffer_writes_at_once():
    out = Counting()
    lg = logger_with(mlog.BatchedHandler(out, delay=10.0, max_bytes=1000))
    for _ in range(50):
        lg.info("x" * 50)
    assert out.writes >= 1 and out.getvalue().count("\n") >= 15


def test_the_last_lines_are_written_at_normal_exit():
    code = (
        "from mailflow import log; import logging\n"
        "log.setup('svc', 'INFO', 'text', flush_delay=30)\n"
        "logging.getLogger('x').info('last words', extra={'queue_id': 'Q1'})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert "I svc x: last words  [queue_id=Q1]" in proc.stderr


def test_json_lines_carry_the_context():
    out = io.StringIO()
    handler = mlog.BatchedHandler(out, delay=0)
    lg = logger_with(handler)
    handler.setFormatter(mlog.JsonFormatter())
    with mlog.context(queue_id="Q9", trace_id="t9"):
        lg.info("delivered", extra={"rcpt": "a@b.test"})
    import json

    rec = json.loads(out.getvalue())
    assert rec["msg"] == "delivered" and rec["queue_id"] == "Q9" and rec["trace_id"] == "t9" and rec["rcpt"] == "a@b.test"


# --- client text cannot forge lines (issue 12.7) -------------------------------------------------------

FORGED = "x\r\n12:00:00.000 I imap-pop3 mailflow_imap_pop3.imap.session: login  [user=admin]\x1b[2J\x7f\x85\u2028"


def _one_record(formatter: logging.Formatter) -> str:
    out = io.StringIO()
    handler = mlog.BatchedHandler(out, delay=0)
    lg = logger_with(handler)
    handler.setFormatter(formatter)
    lg.info("login failed for %s", FORGED, extra={"user": FORGED, FORGED: 1})
    return out.getvalue()


def test_text_lines_escape_control_characters_in_the_message_and_every_field():
    text = _one_record(mlog.TextFormatter())
    assert text.count("\n") == 1 and text.endswith("\n")
    assert not any(ch in text[:-1] for ch in "\r\x1b\x7f\x85\u2028")
    assert "x\\r\\n12:00:00.000 I imap-pop3" in text and "\\x1b[2J\\x7f\\x85\\u2028" in text
    assert text.count("\\r\\n12:00:00.000") == 3  # the message, the value and the field's name


def test_json_lines_escape_control_characters_and_keep_the_values():
    import json

    text = _one_record(mlog.JsonFormatter())
    assert text.count("\n") == 1
    assert not any(ch in text[:-1] for ch in "\r\x1b\x7f\x85\u2028")
    rec = json.loads(text)
    assert rec["user"] == FORGED and rec["msg"] == f"login failed for {FORGED}"  # escaped, not altered


def test_plain_text_is_left_as_it_is():
    assert mlog.escape("Grüße, bob@example.test [ok]") == "Grüße, bob@example.test [ok]"
    assert mlog.escape("a\tb\x00c") == "a\\tb\\x00c"
