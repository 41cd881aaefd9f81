"""Structured, event-keyed logging: `job.completed job_id=1 task=x ...` as text or as JSON lines."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    # logger.handle(makeRecord(...)) is logger.log() without findCaller(), which walks the stack
    # for a file and line no pgtasks format shows: the event name says where a line comes from.
    record = logger.makeRecord(logger.name, level, __file__, 0, _template(event, fields), tuple(fields.values()),
                               None, func="log_event", extra={"event": event, "fields": fields})
    if exc_text:
        record.exc_text = exc_text.rstrip("\n")
    logger.handle(record)


_TEMPLATES: dict[tuple[str, ...], str] = {}


def _template(event: str, fields: dict[str, Any]) -> str:
    """`event k=%s ...`, built once per event and set of field names (a handful of shapes in all)."""
    key = (event, *fields)
    template = _TEMPLATES.get(key)
    if template is None:
        template = event + "".join(f" {name}=%s" for name in fields)
        if len(_TEMPLATES) < 1024:  # shapes are few; a caller inventing field names cannot grow this for ever
            _TEMPLATES[key] = template
    return template


class EventBurst:
    """Many event lines logged by one thread in a row (a worker's job lines after an outcome
    write), each at a fraction of emit_event()'s cost.

    LogRecord.__init__ is most of a line's cost, and most of what it computes (the thread, the
    process, the logger's file fields) is the same for every line of a burst. So the first line
    of each logger and level is made by the logger as usual, and the others are copies of it with
    their own message, fields and time; handlers and filters see each record as usual. A custom
    record factory (logging.setLogRecordFactory) gets every record made by it instead.
    """

    __slots__ = ("_copy", "_prototypes")

    def __init__(self) -> None:
        self._prototypes: dict[tuple[str, int], dict[str, Any]] = {}
        self._copy = logging.getLogRecordFactory() is logging.LogRecord

    def emit(self, logger: logging.Logger, level: int, event: str, fields: dict[str, Any], *,
             exc_text: str | None = None) -> None:
        if not logger.isEnabledFor(level):
            return
        template, args = _template(event, fields), tuple(fields.values())
        prototype = self._prototypes.get((logger.name, level)) if self._copy else None
        if prototype is None or len(args) == 1:  # one arg that is a mapping: LogRecord unwraps it
            record = logger.makeRecord(logger.name, level, __file__, 0, template, args, None,
                                       func="log_event", extra={"event": event, "fields": fields})
            if self._copy:  # as made, before a handler or formatter adds to it (message, asctime)
                self._prototypes[logger.name, level] = dict(record.__dict__)
        else:
            record = logging.LogRecord.__new__(logging.LogRecord)
            attributes = record.__dict__
            attributes.update(prototype)
            created = time.time()
            attributes.update(msg=template, args=args, event=event, fields=fields, created=created,
                              msecs=int((created - int(created)) * 1000) + 0.0,
                              relativeCreated=prototype["relativeCreated"] + (created - prototype["created"]) * 1000)
        record.exc_text = exc_text.rstrip("\n") if exc_text else None
        logger.handle(record)


_held = threading.local()


@contextmanager
def held_writes() -> Iterator[None]:
    """Lines that pgtasks' own handler (configure_logging) formats on this thread inside the block
    are written together at its end: one write and flush instead of one per line."""
    if getattr(_held, "handlers", None) is not None:  # nested: the outer block writes
        yield
        return
    _held.handlers = []
    try:
        yield
    finally:
        handlers: list[_BurstStreamHandler] = _held.handlers
        _held.handlers = None
        for handler in handlers:
            handler.write_held()


class _BurstStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that, inside held_writes() on the same thread, keeps its formatted lines
    to write them in one go; other threads' lines are written at once, as usual."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        handlers: list[_BurstStreamHandler] | None = getattr(_held, "handlers", None)
        if handlers is None:
            super().emit(record)
            return
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own convention: report and go on
            self.handleError(record)
            return
        if not self._lines:
            handlers.append(self)
        self._lines.append(line + self.terminator)

    def write_held(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            lines, self._lines = self._lines, []
            if lines:
                try:
                    self.stream.write("".join(lines))
                    self.flush()
                except Exception:  # noqa: BLE001 - as StreamHandler.emit: report, never raise into the worker
                    self.handleError(logging.makeLogRecord({"msg": "held log lines", "levelno": logging.ERROR}))


class _TextFormatter(logging.Formatter):
    """logging.Formatter whose time text is built once a second: time.strftime is most of a
    short line's formatting. The text is the same as the base class's."""

    _second: int | None = None
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        msec_format = self.default_msec_format
        if datefmt is not None or msec_format is None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return msec_format % (self._text, record.msecs)


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
    handler = _BurstStreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = _TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger("pgtasks")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
