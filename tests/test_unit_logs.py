"""EventBurst and held_writes (core/logs.py): the records a burst makes are those emit_event makes,
and pgtasks' own handler writes a burst's lines in one go, the same text as line by line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from pgtasks.core import logs
from pgtasks.core.logs import EventBurst, emit_event, held_writes

# What differs between two records made at different moments; everything else must be equal.
# A record's own times, and `asctime`, which a formatter (pytest's log capture, say) writes onto the
# record from them: two records made a millisecond apart differ there and nowhere else.
_TIMES = {"created", "msecs", "relativeCreated", "asctime"}


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Iterator[tuple[logging.Logger, _Keep]]:
    logger = logging.getLogger("pgtasks.test_unit_logs")
    handler = _Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def _attributes(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _TIMES}


def test_a_burst_makes_the_records_emit_event_makes(kept: tuple[logging.Logger, _Keep]) -> None:
    logger, handler = kept
    lines: list[tuple[int, str, dict[str, Any], str | None]] = [
        (logging.INFO, "job.completed", {"job_id": 1, "task": "t", "attempt": 1, "duration_ms": 0.5}, None),
        (logging.INFO, "job.completed", {"job_id": 2, "task": "t", "attempt": 1, "duration_ms": 0.7}, None),
        (logging.ERROR, "job.discarded", {"job_id": 3, "task": "t", "attempt": 3, "error": "E: x"}, "Traceback\n"),
        (logging.INFO, "job.snoozed", {"job_id": 4, "task": "t", "attempt": 1, "duration_ms": 1.0}, None),
        (logging.ERROR, "job.discarded", {"job_id": 5, "task": "t", "attempt": 3, "error": "E: y"}, None),
        (logging.INFO, "one.field", {"only": {"a": 1}}, None),  # a lone mapping argument, unwrapped by LogRecord
    ]
    for level, event, fields, exc_text in lines:
        emit_event(logger, level, event, fields, exc_text=exc_text)
    burst = EventBurst()
    for level, event, fields, exc_text in lines:
        burst.emit(logger, level, event, fields, exc_text=exc_text)
    single, burst_made = handler.records[:len(lines)], handler.records[len(lines):]
    assert len(burst_made) == len(lines)
    for one, other in zip(single, burst_made, strict=True):
        assert _attributes(one) == _attributes(other)
        assert one.getMessage() == other.getMessage()
        assert other.created >= one.created
        start: float = getattr(logging, "_startTime")  # logging's own clock origin (private)  # noqa: B009
        assert other.relativeCreated == pytest.approx((other.created - start) * 1000)
    assert burst_made[2].exc_text == "Traceback" and burst_made[4].exc_text is None


def test_a_burst_skips_disabled_levels(kept: tuple[logging.Logger, _Keep]) -> None:
    logger, handler = kept
    logger.setLevel(logging.WARNING)
    burst = EventBurst()
    burst.emit(logger, logging.INFO, "job.completed", {"job_id": 1, "task": "t"})
    burst.emit(logger, logging.WARNING, "job.retrying", {"job_id": 2, "task": "t"})
    assert [r.getMessage() for r in handler.records] == ["job.retrying job_id=2 task=t"]


def test_a_custom_record_factory_makes_every_record(kept: tuple[logging.Logger, _Keep]) -> None:
    logger, handler = kept
    default = logging.getLogRecordFactory()
    made: list[str] = []

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = default(*args, **kwargs)
        made.append(record.getMessage())
        return record

    logging.setLogRecordFactory(factory)
    try:
        burst = EventBurst()
        for job_id in (1, 2, 3):
            burst.emit(logger, logging.INFO, "job.completed", {"job_id": job_id, "task": "t"})
    finally:
        logging.setLogRecordFactory(default)
    assert made == [f"job.completed job_id={i} task=t" for i in (1, 2, 3)]
    assert len(handler.records) == 3


class _CountingStream(io.StringIO):
    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _cli_handler(stream: io.StringIO, fmt: str) -> logging.Logger:
    logs.configure_logging("INFO", fmt)
    root = logging.getLogger("pgtasks")
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    return logging.getLogger("pgtasks.worker")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_held_writes_write_a_burst_at_once_with_the_same_text(fmt: str) -> None:
    root = logging.getLogger("pgtasks")
    saved = (root.handlers[:], root.level, root.propagate)
    try:
        one_by_one = _CountingStream()
        logger = _cli_handler(one_by_one, fmt)
        for job_id in range(5):
            emit_event(logger, logging.INFO, "job.completed", {"job_id": job_id, "task": "t"})
        held = _CountingStream()
        logger = _cli_handler(held, fmt)
        with held_writes():
            with held_writes():  # nested: the outer block writes
                burst = EventBurst()
                for job_id in range(5):
                    burst.emit(logger, logging.INFO, "job.completed", {"job_id": job_id, "task": "t"})
            assert held.getvalue() == ""
        assert held.writes == 1 and one_by_one.writes == 5

        def without_times(text: str) -> list[str]:
            if fmt == "text":
                return [line.split(" ", 2)[2] for line in text.splitlines()]
            return [line.split(",", 1)[1] for line in text.splitlines()]

        assert without_times(held.getvalue()) == without_times(one_by_one.getvalue())
        assert len(held.getvalue().splitlines()) == 5
    finally:
        root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


def test_the_text_formatter_times_read_as_logging_s_own() -> None:
    ours = logs._TextFormatter("%(asctime)s %(message)s")
    theirs = logging.Formatter("%(asctime)s %(message)s")
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.25, 1_700_000_001.5, 1_700_003_600.001):
        record = logging.makeLogRecord({"msg": "m", "created": created,
                                        "msecs": int((created - int(created)) * 1000) + 0.0})
        assert ours.format(record) == theirs.format(record)
