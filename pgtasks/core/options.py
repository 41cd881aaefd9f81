"""Validation and normalisation of enqueue options (countdown, eta, expires, priority, queue)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import msgspec

from pgtasks.core.errors import ConfigurationError
from pgtasks.core.models import EnqueueRow

PRIORITY_MIN, PRIORITY_MAX = -32768, 32767
DEFAULT_MAX_ATTEMPTS = 20


class EnqueueOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Per-call options; None means "use the task's default"."""

    queue: str | None = None
    priority: int | None = None
    countdown: float | timedelta | None = None
    eta: datetime | None = None
    expires: float | timedelta | datetime | None = None
    max_attempts: int | None = None
    unique_key: str | None = None

    def merged(self, other: EnqueueOptions) -> EnqueueOptions:
        """`other`'s set values win over this one's."""
        values = {f: getattr(other, f) if getattr(other, f) is not None else getattr(self, f)
                  for f in self.__struct_fields__}
        return EnqueueOptions(**values)


def to_seconds(name: str, value: float | timedelta, *, zero_ok: bool = False) -> float:
    """`value` (a number of seconds or a timedelta) as float seconds: positive, or >= 0 with zero_ok.

    The one rule for every duration pgtasks accepts; the error names the setting and the value.
    """
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or math.isnan(seconds):
        raise ConfigurationError(f"{name}={value!r}: expected seconds (a number) or a timedelta")
    if seconds < 0:
        raise ConfigurationError(f"{name}={value!r}: must not be negative")
    if seconds == 0 and not zero_ok:
        raise ConfigurationError(f"{name}={value!r}: expected a positive number of seconds (or a timedelta)")
    return float(seconds)


def _aware(name: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(
            f"{name}={value!r} is a naive datetime; pass a timezone-aware one, "
            "e.g. datetime.now(timezone.utc) + timedelta(minutes=5)"
        )
    return value


def validate_queue(queue: str) -> str:
    """A queue name a worker can be told to serve: `worker --queues a,b` splits on commas and strips
    spaces, so a name with a comma, or a space at either end, could be enqueued but never run."""
    if not isinstance(queue, str) or not queue or len(queue) > 128:
        raise ConfigurationError(f"queue={queue!r}: a queue name is a non-empty string of at most 128 characters")
    if queue != queue.strip():
        raise ConfigurationError(f"queue={queue!r}: a queue name must not start or end with whitespace "
                                 f"(`worker --queues` strips it, so no worker could serve it); use {queue.strip()!r}")
    if "," in queue:
        raise ConfigurationError(f"queue={queue!r}: a queue name must not contain a comma (`worker --queues` splits "
                                 f"on commas, so no worker could serve it); use e.g. {queue.replace(',', '-')!r}")
    _no_nul("queue", queue)
    return queue


def validate_task_name(name: str) -> str:
    """A task name that can be stored in jobs.task."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"name={name!r}: a task name is a non-empty string")
    _no_nul("name", name)
    return name


def _no_nul(setting: str, value: str) -> None:
    # PostgreSQL text cannot hold NUL: the insert would fail with a database error, far from here.
    if "\x00" in value:
        raise ConfigurationError(f"{setting}={value!r}: must not contain a NUL character (\\x00), "
                                 "which PostgreSQL cannot store; remove it")


def validate_priority(priority: int) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ConfigurationError(
            f"priority={priority!r}: expected an integer from {PRIORITY_MIN} to {PRIORITY_MAX} (higher runs first)"
        )
    return priority


def validate_max_attempts(max_attempts: int) -> int:
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ConfigurationError(f"max_attempts={max_attempts!r}: expected an integer >= 1")
    return max_attempts


def build_row(task: str, args_json: str, options: EnqueueOptions, defaults: EnqueueOptions) -> EnqueueRow:
    """Resolve options against the task's defaults and turn them into an insertable row."""
    opts = defaults.merged(options)
    if opts.countdown is not None and opts.eta is not None:
        raise ConfigurationError("pass either countdown= or eta=, not both")
    run_at = _aware("eta", opts.eta) if opts.eta is not None else None
    delay = to_seconds("countdown", opts.countdown, zero_ok=True) if opts.countdown is not None else None
    expires_at: datetime | None = None
    expires_in: float | None = None
    if isinstance(opts.expires, datetime):
        expires_at = _aware("expires", opts.expires)
    elif opts.expires is not None:
        expires_in = to_seconds("expires", opts.expires, zero_ok=True)
    unique_key = opts.unique_key
    if unique_key is not None and (not isinstance(unique_key, str) or not unique_key):
        raise ConfigurationError(f"unique_key={unique_key!r}: expected a non-empty string")
    if unique_key is not None:
        _no_nul("unique_key", unique_key)
    return EnqueueRow(
        task=task,
        queue=validate_queue(opts.queue if opts.queue is not None else "default"),
        args=args_json,
        priority=validate_priority(opts.priority if opts.priority is not None else 0),
        max_attempts=validate_max_attempts(DEFAULT_MAX_ATTEMPTS if opts.max_attempts is None else opts.max_attempts),
        run_at=run_at,
        delay=delay,
        expires_at=expires_at,
        expires_in=expires_in,
        unique_key=unique_key,
    )
