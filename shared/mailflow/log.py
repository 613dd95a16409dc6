"""Structured logging: text locally, one JSON object per line in containers.

Context that belongs to every line of a unit of work (the service name, an SMTP/IMAP session id,
the queue id of the message being handled, the trace id) lives in context variables and is added
by a filter, so call sites just write `log.info("delivered", extra={"rcpt": ...})`.
A failure to format a record never raises into the caller (the logging module prints it instead).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
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


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _CONTEXT.items():
            if not hasattr(record, name):
                setattr(record, name, var.get())
        return True


def _fields(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None}


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
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        service = fields.pop("service", "-")
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{self.formatTime(record, '%H:%M:%S')}.{int(record.msecs):03d} {record.levelname[0]} {service} {record.name}: {record.getMessage()}"
        if extra:
            line += f"  [{extra}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(service: str, level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once, at process start (from `__main__`)."""
    service_var.set(service)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "nats", "httpx", "httpcore", "mail.log", "aiosqlite"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
