"""Log records that say which request, user, thread, run and trace they belong to; JSON under LOG_FORMAT=json.

A request (api/middleware.py) or a run (runs/workers.py) opens a context; code below it binds what it
learns (the user, the thread). Every record logged inside carries those fields and the current trace ID.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

from opentelemetry import trace

FIELDS = ("request_id", "user", "thread_id", "run_id")

# One dict per request or run: binding mutates it, so what a dependency binds is seen by the route too.
_context: ContextVar[dict[str, str] | None] = ContextVar("log_context", default=None)


@contextmanager
def log_context(**fields: str) -> Iterator[None]:
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: str) -> None:
    """Add fields to the current request's or run's records, and to its span."""
    context = _context.get()
    if context is not None:
        context.update(fields)
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(fields)


def current(field: str) -> str | None:
    """A field of the current request's or run's context (None outside one)."""
    return (_context.get() or {}).get(field)


class ContextFilter(logging.Filter):
    """Puts the context's fields and the trace ID on every record (empty strings outside any context)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get() or {}
        for name in FIELDS:
            setattr(record, name, context.get(name, ""))
        span_context = trace.get_current_span().get_span_context()
        record.trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else ""
        record.span_id = format(span_context.span_id, "016x") if span_context.is_valid else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with only the fields that have a value."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in (*FIELDS, "trace_id", "span_id"):
            if value := getattr(record, name, ""):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """The usual line, then the context's fields that have a value: `... [user=alice run_id=...]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{name}={value}" for name in (*FIELDS, "trace_id") if (value := getattr(record, name, "")))
        line = super().formatMessage(record)
        return f"{line} [{fields}]" if fields else line


def configure_logging(log_format: Literal["text", "json"], level: int | str = logging.INFO) -> None:
    """The root handler for the service and uvicorn (which then needs `log_config=None`)."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
