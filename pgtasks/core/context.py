"""The job that the current task code is running for: `pgtasks.current_job()`, and the progress it reports."""

from __future__ import annotations

import contextvars
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import msgspec

from pgtasks.core.errors import PgtasksError

_PROGRESS_ENCODER = msgspec.json.Encoder()
# Progress is rewritten up to twice a second for as long as a job runs: a report is a status line
# and a little detail, not a result. Bigger values belong in the result or a table of their own.
PROGRESS_MAX_BYTES = 64 * 1024


class JobProgress(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a task last reported with `current_job().set_progress()`.

    `attempt` is the attempt that reported it; `at` is the database time it was stored (None
    until it is). `fraction` is done/total when a total was given.
    """

    done: int | float
    total: int | float | None = None
    message: str | None = None
    meta: Any = None
    attempt: int | None = None
    at: datetime | None = None

    @property
    def fraction(self) -> float | None:
        return None if not self.total else min(self.done / self.total, 1.0)

    def describe(self) -> str:
        """One short line for a table: `30/120 (25%) resizing`, or `30 resizing` without a total."""
        amount = _number(self.done) if self.total is None else f"{_number(self.done)}/{_number(self.total)}"
        if self.fraction is not None:
            amount += f" ({self.fraction:.0%})"
        return amount if self.message is None else f"{amount} {self.message}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class ProgressSink(Protocol):
    """Where a worker's jobs report progress. Called from task threads and the event loop alike, so
    it must be thread-safe and must not block: it keeps the latest value and writes it later."""

    def report(self, job_id: int, claims: int, payload: bytes) -> None: ...


def _check_amount(name: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"set_progress({name}={value!r}): expected a number (int or float)")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"set_progress({name}={value!r}): expected a finite number >= 0")


def encode_progress(done: float, total: float | None, message: str | None, meta: Any, attempt: int) -> bytes:
    """Validate one report and encode it as the JSON stored in jobs.progress (the database adds `at`)."""
    _check_amount("done", done, optional=False)
    _check_amount("total", total, optional=True)
    if message is not None and not isinstance(message, str):
        raise TypeError(f"set_progress(message={message!r}): expected a str or None")
    try:
        payload = _PROGRESS_ENCODER.encode(JobProgress(done, total, message, meta, attempt))
    except (TypeError, msgspec.EncodeError) as exc:
        raise TypeError(f"set_progress(meta={meta!r}) cannot be stored as JSON: {exc}; pass plain "
                        f"dicts, lists, strings and numbers") from None
    if len(payload) > PROGRESS_MAX_BYTES:
        raise ValueError(f"set_progress(): the report is {len(payload)} bytes as JSON, more than "
                         f"{PROGRESS_MAX_BYTES}; keep message and meta short (store big data in the result)")
    return payload


@dataclass(slots=True)
class JobContext:
    """What a running task may ask about its own job.

    `cancelled` turns True when an operator cancels the running job, and `soft_timed_out` when
    the attempt has run for the task's `soft_timeout`: a sync task, which cannot be interrupted,
    polls them to stop early (an async task also gets CancelledError / SoftTimeLimitExceeded).
    """

    id: int
    task: str
    queue: str
    attempt: int
    max_attempts: int
    created_at: datetime
    worker_id: str
    cancelled: bool = field(default=False)
    soft_timed_out: bool = field(default=False)
    claims: int = 0  # the claim this attempt runs under: progress writes are fenced on it
    progress_sink: ProgressSink | None = field(default=None, repr=False)
    progress: JobProgress | None = None  # the last value reported by this attempt

    def set_progress(self, done: float, total: float | None = None, message: str | None = None,
                     meta: Any = None) -> None:
        """Report how far the task got: `done` of `total` (both numbers, `total` optional), a short
        `message`, and any JSON-encodable `meta`.

        Call it as often as you like: it only keeps the latest value, and the worker stores it at
        most twice a second per worker (one statement for all its jobs), never blocking the task.
        Read it with `JobRef.progress()`, `pgtasks jobs show` and `pgtasks jobs list`. The last
        value stays on the job when it finishes. Raises TypeError/ValueError for a value that
        cannot be stored, in the task, where the mistake is.
        """
        payload = encode_progress(done, total, message, meta, self.attempt)
        self.progress = JobProgress(done, total, message, meta, self.attempt)
        if self.progress_sink is not None:  # eager mode has none: the value stays on the context
            self.progress_sink.report(self.id, self.claims, payload)


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("pgtasks_current_job", default=None)


def current_job() -> JobContext:
    """The job being run by this task invocation; raises outside a worker."""
    job = _current.get()
    if job is None:
        raise PgtasksError("current_job() is only available inside a task run by a pgtasks worker")
    return job


def set_current_job(job: JobContext | None) -> contextvars.Token[JobContext | None]:
    return _current.set(job)


def reset_current_job(token: contextvars.Token[JobContext | None]) -> None:
    """Undo the set_current_job() that returned `token`."""
    _current.reset(token)
