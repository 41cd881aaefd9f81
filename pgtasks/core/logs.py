"""Structured, event-keyed logging: `job.completed job_id=1 task=x ...` as text or as JSON lines."""

from __future__ import annotations

import logging
import sys
from typing import Any

import msgspec


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log `event` with `fields`; the text form reads `event k=v ...`, the JSON form keeps them as keys."""
    emit_event(logger, level, event, fields)


def emit_event(logger: logging.Logger, level: int, event: str, fields: dict[str, Any], *,
               exc_text: str | None = None) -> None:
    """log_event() with the fields as a dict, and optionally `exc_text`: an already formatted
    traceback (a job's, kept as text on its error entry), which text formatters print under the
    line and the JSON one as `exception`, as for a logged exception."""
    if not logger.isEnabledFor(level):
        return
    template = event + "".join(f" {key}=%s" for key in fields)
    # logger.handle(makeRecord(...)) is logger.log() without findCaller(), which walks the stack
    # for a file and line no pgtasks format shows: the event name says where a line comes from.
    record = logger.makeRecord(logger.name, level, __file__, 0, template, tuple(fields.values()), None,
                               func="log_event", extra={"event": event, "fields": fields})
    if exc_text:
        record.exc_text = exc_text.rstrip("\n")
    logger.handle(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, the event's fields, and any exception."""

    _encoder = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        elif payload["event"] != record.getMessage():
            payload["message"] = record.getMessage()
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exception"] = record.exc_text
        return self._encoder.encode({k: _jsonable(v) for k, v in payload.items()}).decode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool | type(None) | list | dict):
        return value
    return str(value)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Set up the `pgtasks` logger for the CLI: text (human) or json (log shippers) on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = __import__("time").gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger("pgtasks")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
