"""A task definition: the function, its registered defaults, its argument codec, and its job rows."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar

import msgspec

from pgtasks.core.arguments import ArgumentCodec
from pgtasks.core.errors import ConfigurationError, JobControl
from pgtasks.core.hooks import Hook
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
    # Which exceptions the task raises are retried: None retries every one (the default); a tuple
    # only those. dont_retry_on wins over it. Not retried, a failure discards the job at once.
    retry_on: tuple[type[Exception], ...] | None = None
    dont_retry_on: tuple[type[Exception], ...] = ()
    soft_timeout: float | None = None  # seconds: SoftTimeLimitExceeded / current_job().soft_timed_out
    handlers: TaskHandlers | None = None  # on_success / on_failure / on_retry of this task only

    @classmethod
    def create(
        cls, name: str, *, queue: str = "default", priority: int = 0, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry: RetryPolicy | None = None, timeout: float | None = None, store_result: bool = True,
        unique: Unique | bool | None = None, concurrency: int | Limit | None = None,
        rate_limit: str | Rate | Limit | None = None, retry_on: ExceptionTypes | None = None,
        dont_retry_on: ExceptionTypes | None = None, soft_timeout: float | None = None,
        on_success: Hook | None = None, on_failure: Hook | None = None, on_retry: Hook | None = None,
    ) -> TaskConfig:
        """Validate what `@app.task(...)` was given; every mistake fails here, at decoration time."""
        validate_queue(queue)
        validate_priority(priority)
        validate_max_attempts(max_attempts)
        if timeout is not None and not _positive_seconds(timeout):
            raise ConfigurationError(f"timeout={timeout!r}: expected a positive number of seconds, or None")
        if soft_timeout is not None:
            if not _positive_seconds(soft_timeout):
                raise ConfigurationError(f"soft_timeout={soft_timeout!r}: expected a positive number of seconds, "
                                         "or None")
            if timeout is not None and soft_timeout >= timeout:
                raise ConfigurationError(f"soft_timeout={soft_timeout!r}: must be less than timeout={timeout!r}, "
                                         "so the task has time to clean up before the hard limit")
        if retry is not None and not callable(getattr(retry, "delay", None)):
            raise ConfigurationError(f"retry={retry!r}: expected a retry policy with a delay(attempt) method")
        handlers = TaskHandlers.create(on_success=on_success, on_failure=on_failure, on_retry=on_retry)
        return cls(name, queue, priority, max_attempts, retry or Backoff(),
                   float(timeout) if timeout is not None else None,
                   store_result=bool(store_result), unique=as_unique(unique),
                   limits=task_limits(concurrency, rate_limit),
                   retry_on=_exception_types("retry_on", retry_on),
                   dont_retry_on=_exception_types("dont_retry_on", dont_retry_on) or (),
                   soft_timeout=float(soft_timeout) if soft_timeout is not None else None,
                   handlers=handlers)

    def defaults(self) -> EnqueueOptions:
        return EnqueueOptions(queue=self.queue, priority=self.priority, max_attempts=self.max_attempts)

    def retries(self, exc: BaseException) -> bool:
        """Whether a failure with `exc` may be retried (attempts permitting): retry_on and dont_retry_on."""
        if isinstance(exc, self.dont_retry_on):
            return False
        return self.retry_on is None or isinstance(exc, self.retry_on)


ExceptionTypes = type[Exception] | tuple[type[Exception], ...] | list[type[Exception]]


@dataclass(frozen=True, slots=True)
class TaskHandlers:
    """A task's own handlers, each `handler(event: pgtasks.JobEvent)`, sync or async, run by the
    worker like the App's job hooks: on_success after a completed attempt (event.result), on_failure
    when the job ends discarded (attempts used up, or an exception not retried), on_retry when it
    will run again after a failure or a `raise Retry`."""

    on_success: Hook | None = None
    on_failure: Hook | None = None
    on_retry: Hook | None = None

    @classmethod
    def create(cls, *, on_success: Hook | None, on_failure: Hook | None, on_retry: Hook | None) -> TaskHandlers | None:
        for option, handler in (("on_success", on_success), ("on_failure", on_failure), ("on_retry", on_retry)):
            if handler is not None and not callable(handler):
                raise ConfigurationError(f"{option}={handler!r}: expected a function taking a pgtasks.JobEvent")
        if on_success is None and on_failure is None and on_retry is None:
            return None
        return cls(on_success, on_failure, on_retry)


def _positive_seconds(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and value > 0


def _exception_types(option: str, value: ExceptionTypes | None) -> tuple[type[Exception], ...] | None:
    """An exception class or a tuple (list) of them, as a tuple; None stays None."""
    if value is None:
        return None
    items = (value,) if isinstance(value, type) else value
    if not isinstance(items, tuple | list):
        raise ConfigurationError(f"{option}={value!r}: expected an exception class or a tuple of them, "
                                 f"e.g. {option}=(ConnectionError, TimeoutError)")
    for item in items:
        if not (isinstance(item, type) and issubclass(item, Exception)):
            raise ConfigurationError(f"{option}={value!r}: {item!r} is not an exception class; expected a tuple "
                                     f"of them, e.g. {option}=(ConnectionError, TimeoutError)")
        if issubclass(item, JobControl):
            raise ConfigurationError(f"{option}={value!r}: {item.__name__} steers the job itself (Retry always "
                                     "retries while attempts are left; Snooze and Cancel are not failures); "
                                     "leave it out")
    return tuple(items)


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
        template = self._template(options)
        return self._finish(template, self.codec.encode(args, kwargs))

    def build_rows(self, calls: Sequence[tuple[tuple[Any, ...], dict[str, Any], EnqueueOptions]]) -> list[EnqueueRow]:
        """build_row() of many (args, kwargs, options) calls, their arguments checked as one batch
        (ArgumentCodec.encode_many); raises for the first call that is wrong."""
        templates: list[EnqueueRow] = []
        last: EnqueueOptions | None = None
        template: EnqueueRow | None = None
        for _, _, options in calls:
            if options is not last or template is None:  # a batch mostly shares one options object
                template, last = self._template(options), options
            templates.append(template)
        encoded = self.codec.encode_many([(args, kwargs) for args, kwargs, _ in calls])
        return [self._finish(t, args_json) for t, args_json in zip(templates, encoded, strict=True)]

    def _template(self, options: EnqueueOptions) -> EnqueueRow:
        """The row of `options` (all but its args), resolved against the task's defaults once."""
        try:
            template, cacheable = self._row_templates.get(options), True
        except TypeError:  # an unhashable option value: build_row() below says what is wrong with it
            template, cacheable = None, False
        if template is None:
            template = build_row(self.name, "", options, self.config.defaults())
            if cacheable and len(self._row_templates) < _MAX_ROW_TEMPLATES:
                self._row_templates[options] = template
        return template

    def _finish(self, template: EnqueueRow, args_json: str) -> EnqueueRow:
        row = msgspec.structs.replace(template, args=args_json)
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
