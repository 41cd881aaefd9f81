"""A task definition: the function, its registered defaults, its argument codec, and its job rows."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar

import msgspec

from pgtasks.core.arguments import ArgumentCodec
from pgtasks.core.errors import ConfigurationError
from pgtasks.core.limits import Limit, Rate, TaskLimits, task_limits
from pgtasks.core.models import EnqueueRow
from pgtasks.core.options import (
    DEFAULT_MAX_ATTEMPTS,
    EnqueueOptions,
    build_row,
    validate_max_attempts,
    validate_priority,
    validate_queue,
    validate_task_name,
)
from pgtasks.core.retry import Backoff, RetryPolicy
from pgtasks.core.unique import Unique, as_unique

P = ParamSpec("P")
R = TypeVar("R")

# Resolved rows are cached per options value; a fresh eta on every call would grow the cache forever.
_MAX_ROW_TEMPLATES = 64


@dataclass(frozen=True, slots=True)
class TaskConfig:
    """A task's registered defaults."""

    name: str
    queue: str
    priority: int
    max_attempts: int
    retry: RetryPolicy
    timeout: float | None
    store_result: bool = True  # False: the return value is not written to jobs.result
    unique: Unique | None = None  # derive unique_key from the arguments (pgtasks.Unique)
    limits: TaskLimits | None = None  # concurrency and rate limits, enforced at claim (docs/limits.md)

    @classmethod
    def create(
        cls, name: str, *, queue: str = "default", priority: int = 0, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry: RetryPolicy | None = None, timeout: float | None = None, store_result: bool = True,
        unique: Unique | bool | None = None, concurrency: int | Limit | None = None,
        rate_limit: str | Rate | Limit | None = None,
    ) -> TaskConfig:
        """Validate what `@app.task(...)` was given; every mistake fails here, at decoration time."""
        validate_queue(queue)
        validate_priority(priority)
        validate_max_attempts(max_attempts)
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
            raise ConfigurationError(f"timeout={timeout!r}: expected a positive number of seconds, or None")
        if retry is not None and not callable(getattr(retry, "delay", None)):
            raise ConfigurationError(f"retry={retry!r}: expected a retry policy with a delay(attempt) method")
        return cls(name, queue, priority, max_attempts, retry or Backoff(),
                   float(timeout) if timeout is not None else None,
                   store_result=bool(store_result), unique=as_unique(unique),
                   limits=task_limits(concurrency, rate_limit))

    def defaults(self) -> EnqueueOptions:
        return EnqueueOptions(queue=self.queue, priority=self.priority, max_attempts=self.max_attempts)


class TaskDefinition(Generic[P, R]):
    """What a worker needs to run a task and a producer needs to enqueue it, without any I/O.

    Calling it runs the function inline. `build_row()` validates and encodes one call's arguments
    and options into the row a job is inserted as.
    """

    name: str
    config: TaskConfig

    def __init__(self, func: Callable[P, R], config: TaskConfig) -> None:
        if isinstance(func, TaskDefinition):
            raise ConfigurationError(f"{func.name} is already a task; apply @app.task once")
        validate_task_name(config.name)  # before the codec: msgspec refuses a NUL in its type name
        if config.unique is not None:
            config.unique.check(func, config.name)
        if config.limits is not None:
            config.limits.check(func, config.name)
        self.func = func
        self.config = config
        self.name = config.name
        self.is_async = inspect.iscoroutinefunction(func)
        self.codec = ArgumentCodec(func, config.name)
        # Resolved rows (all but args) per options value: options are resolved and validated once,
        # not for every job of a bulk enqueue (docs/performance.md).
        self._row_templates: dict[EnqueueOptions, EnqueueRow] = {}
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.config.queue!r}>"

    def build_row(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: EnqueueOptions) -> EnqueueRow:
        """The row one call inserts; raises TaskArgumentError / ConfigurationError naming what is wrong."""
        try:
            template, cacheable = self._row_templates.get(options), True
        except TypeError:  # an unhashable option value: build_row() below says what is wrong with it
            template, cacheable = None, False
        if template is None:
            template = build_row(self.name, "", options, self.config.defaults())
            if cacheable and len(self._row_templates) < _MAX_ROW_TEMPLATES:
                self._row_templates[options] = template
        row = msgspec.structs.replace(template, args=self.codec.encode(args, kwargs))
        if row.unique_key is None and self.config.unique is not None:  # an explicit unique_key wins
            key = self.config.unique.key(self.name, self.codec.normalized(row.args))
            row = msgspec.structs.replace(row, unique_key=key)
        limits = self.config.limits
        if limits is not None:
            if row.queue != self.config.queue:
                raise ConfigurationError(
                    f"{self.name}: queue={row.queue!r}: this task has limits, enforced in its own queue "
                    f"{self.config.queue!r}; enqueue it there, or give queue {row.queue!r} a limit of its own "
                    "and a task without one (docs/limits.md)")
            if limits.key is not None:
                row = msgspec.structs.replace(row, limit_key=limits.key_of(self.name, self.codec.normalized(row.args)))
        return row
