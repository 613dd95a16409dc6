"""Structured logging: text locally, one JSON object per line in containers.

Context that belongs to every line of a unit of work (the service name, an SMTP/IMAP session id,
the queue id of the message being handled, the trace id) lives in context variables and is added
by a filter, so call sites just write `log.info("delivered", extra={"rcpt": ...})`.
A failure to format a record never raises into the caller (the logging module prints it instead).

Client text reaches the log (a LOGIN name, a HELO argument, an address), so the formatters escape
control characters in the message and in every field, once, here: no call site can forget. CR and LF
become `\\r` and `\\n`, other C0 and C1 controls, DEL and the Unicode line/paragraph separators
`\\xNN`/`\\uNNNN`, so one record is always one line and a terminal shows no escape sequences. A
traceback keeps its own line breaks (it is our text, not the client's).

Lines are written in batches (`BatchedHandler`): a line waits at most `flush_delay` seconds (50 ms) for
others to share its write(2), so a busy service makes one system call per batch, not one per message.
WARNING and above, a full buffer, and the process's normal exit (logging.shutdown) write at once. The
cost: a process killed with SIGKILL loses its last `flush_delay` seconds of INFO lines (never mail:
every hop's state is in JetStream or a database, not in its log).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator

service_var: contextvars.ContextVar[str] = contextvars.ContextVar("service", default="-")
session_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("session", default=None)
peer_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("peer", default=None)
queue_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("queue_id", default=None)
trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)

_CONTEXT = {
    "service": service_var,
    "session": session_var,
    "peer": peer_var,
    "queue_id": queue_id_var,
    "trace_id": trace_id_var,
}
# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime", "taskName"}


@contextlib.contextmanager
def context(**values: str | None) -> Iterator[None]:
    """Bind fields (session, peer, queue_id, trace_id) to every log line inside the block."""
    tokens = [(_CONTEXT[k], _CONTEXT[k].set(v)) for k, v in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


_CONTEXT_ITEMS = tuple(_CONTEXT.items())


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        d = record.__dict__
        for name, var in _CONTEXT_ITEMS:
            if name not in d:
                d[name] = var.get()
        return True


def _fields(record: logging.LogRecord) -> dict:
    return {k: v for k, v in record.__dict__.items() if v is not None and k not in _STANDARD}


def _escape_table() -> dict[int, str]:
    table = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
    table |= {0x0D: "\\r", 0x0A: "\\n", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"}
    return table


_TEXT_ESCAPES = _escape_table()


def escape(text: str) -> str:
    """`text` with no control character in it (the text format's escaping, see the module docstring)."""
    if text.isprintable():
        return text  # the common case costs one scan in C
    return text.translate(_TEXT_ESCAPES)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)  # ensure_ascii: every control character comes out as \\u....


class TextFormatter(logging.Formatter):
    _second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text

    def _clock(self, created: float) -> str:
        whole = int(created)
        if whole != self._second[0]:
            self._second = (whole, time.strftime("%H:%M:%S", time.localtime(whole)))
        return self._second[1]

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        service = fields.pop("service", "-")
        extra = " ".join(f"{escape(str(k))}={escape(str(v))}" for k, v in fields.items())
        line = f"{self._clock(record.created)}.{int(record.msecs):03d} {record.levelname[0]} {service} {record.name}: {escape(record.getMessage())}"
        if extra:
            line += f"  [{extra}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class BatchedHandler(logging.Handler):
    """Writes formatted lines to `stream` in batches: at most `delay` seconds after the first line of a
    batch (a helper thread wakes for it), at once for WARNING and above or past `max_bytes`. Order is
    kept: every write happens under the handler's lock. `flush()` (also called by logging.shutdown at
    exit) writes what is waiting."""

    def __init__(self, stream, delay: float = 0.05, max_bytes: int = 64 * 1024):
        super().__init__()
        self.stream, self.delay, self.max_bytes = stream, delay, max_bytes
        self._lines: list[str] = []
        self._size = 0
        self._due = threading.Event()
        self._thread: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held (Handler.handle)
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)
        self._size += len(line)
        if record.levelno >= logging.WARNING or self._size >= self.max_bytes or self.delay <= 0:
            self._write()
        elif len(self._lines) == 1:
            if self._thread is None:
                self._thread = threading.Thread(target=self._flusher, name="log-flush", daemon=True)
                self._thread.start()
            self._due.set()

    def _write(self) -> None:
        if not self._lines:
            return
        data = "".join(self._lines)
        self._lines.clear()
        self._size = 0
        try:
            self.stream.write(data)
            self.stream.flush()
        except Exception:  # a closed or broken stream: the lines are lost, the caller goes on
            pass

    def flush(self) -> None:
        with self.lock:
            self._write()

    def _flusher(self) -> None:
        while True:
            self._due.wait()
            time.sleep(self.delay)
            self._due.clear()
            self.flush()


def setup(service: str, level: str = "INFO", fmt: str = "text", flush_delay: float = 0.05) -> None:
    """Configure the root logger once, at process start (from `__main__`)."""
    service_var.set(service)
    # Record fields no formatter here prints: skip gathering them (logging HOWTO, "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchedHandler(sys.stderr, delay=flush_delay)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "nats", "httpx", "httpcore", "mail.log", "aiosqlite"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
