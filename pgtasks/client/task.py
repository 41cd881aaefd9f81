"""Task objects: the decorated function plus typed, transactional enqueueing."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

import msgspec
from psycopg import AsyncConnection, Connection

from pgtasks.core.arguments import ArgumentCodec
from pgtasks.core.models import EnqueueRow
from pgtasks.core.options import EnqueueOptions, build_row
from pgtasks.core.retry import Backoff, RetryPolicy
from pgtasks.core.unique import Unique

if TYPE_CHECKING:
    from pgtasks.app import App

P = ParamSpec("P")
_MAX_ROW_TEMPLATES = 64
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class JobRef:
    """A handle on an enqueued job."""

    id: int
    task: str
    app: App = field(repr=False, compare=False)

    def state(self) -> str | None:
        """The job's current state, or None if it no longer exists (cleaned up)."""
        job = self.app.get_job(self.id)
        return None if job is None else str(job["state"])

    def wait(self, timeout: float | None = None, *, poll_interval: float = 1.0, listen: bool = True) -> Any:
        """Block until the job is final and return its result, decoded to the task's return annotation.

        Raises pgtasks.JobDiscardedError / JobCancelledError (with the task's exception type and
        message) if it ended without a result, and pgtasks.WaitTimeoutError after `timeout`
        seconds. Wakes on the completion NOTIFY (listen=True) and polls every `poll_interval`.
        """
        from pgtasks.client import results  # noqa: PLC0415 - results imports the app module

        return results.wait(self.app, self.task, self.id, timeout=timeout, poll_interval=poll_interval,
                            listen=listen)

    async def await_result(self, timeout: float | None = None, *, poll_interval: float = 1.0,
                           listen: bool = True) -> Any:
        """Async twin of wait()."""
        from pgtasks.client import results  # noqa: PLC0415

        return await results.await_result(self.app, self.task, self.id, timeout=timeout,
                                          poll_interval=poll_interval, listen=listen)


@dataclass(frozen=True, slots=True)
class Call:
    """A task bound to its arguments (and options), for bulk enqueueing: `task.s(1, x=2)`."""

    task: Task[Any, Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: EnqueueOptions = field(default_factory=EnqueueOptions)


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
    unique: Unique | None = None  # derive unique_key from the arguments (pgtasks.core.unique)

    def defaults(self) -> EnqueueOptions:
        return EnqueueOptions(queue=self.queue, priority=self.priority, max_attempts=self.max_attempts)


class _Enqueuer(Generic[P]):
    """The enqueue API shared by Task and ConfiguredTask; `options` are the per-call defaults."""

    _task: Task[Any, Any]
    _options: EnqueueOptions

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> JobRef:
        """Enqueue with these arguments; joins the app's bound transaction if there is one."""
        return self._task._enqueue(args, kwargs, self._options, None)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> JobRef:
        """Async twin of delay(), for psycopg AsyncConnection users."""
        return await self._task._aenqueue(args, kwargs, self._options, None)

    def apply_async(
        self,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        countdown: float | timedelta | None = None,
        eta: datetime | None = None,
        expires: float | timedelta | datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
        unique_key: str | None = None,
        connection: Connection[Any] | None = None,
    ) -> JobRef:
        """Enqueue with explicit options (Celery's signature); `connection` joins that transaction."""
        options = self._options.merged(EnqueueOptions(
            queue=queue, priority=priority, countdown=countdown, eta=eta, expires=expires,
            max_attempts=max_attempts, unique_key=unique_key,
        ))
        return self._task._enqueue(tuple(args), kwargs or {}, options, connection)

    async def aapply_async(
        self,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        countdown: float | timedelta | None = None,
        eta: datetime | None = None,
        expires: float | timedelta | datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
        unique_key: str | None = None,
        connection: AsyncConnection[Any] | None = None,
    ) -> JobRef:
        """Async twin of apply_async()."""
        options = self._options.merged(EnqueueOptions(
            queue=queue, priority=priority, countdown=countdown, eta=eta, expires=expires,
            max_attempts=max_attempts, unique_key=unique_key,
        ))
        return await self._task._aenqueue(tuple(args), kwargs or {}, options, connection)

    def s(self, *args: P.args, **kwargs: P.kwargs) -> Call:
        """Bind arguments without enqueueing, for app.enqueue_many()."""
        return Call(self._task, args, kwargs, self._options)

    def delay_many(self, calls: Iterable[tuple[Any, ...] | Call], *,
                   connection: Connection[Any] | None = None) -> list[JobRef]:
        """Enqueue many jobs of this task in one round trip; each item is an args tuple or a `.s()` Call."""
        bound = [c if isinstance(c, Call) else Call(self._task, tuple(c), {}, self._options) for c in calls]
        return self._task.app.enqueue_many(bound, connection=connection)

    async def adelay_many(self, calls: Iterable[tuple[Any, ...] | Call], *,
                          connection: AsyncConnection[Any] | None = None) -> list[JobRef]:
        """Async twin of delay_many()."""
        bound = [c if isinstance(c, Call) else Call(self._task, tuple(c), {}, self._options) for c in calls]
        return await self._task.app.aenqueue_many(bound, connection=connection)


class ConfiguredTask(_Enqueuer[P]):
    """A task with some enqueue options fixed: `task.configure(queue="mail").delay(...)`."""

    def __init__(self, task: Task[P, Any], options: EnqueueOptions) -> None:
        self._task = task
        self._options = options

    def configure(self, **options: Any) -> ConfiguredTask[P]:
        return ConfiguredTask(self._task, self._options.merged(EnqueueOptions(**options)))


class Task(_Enqueuer[P], Generic[P, R]):
    """A registered task. Calling it runs the function inline; .delay() enqueues a job."""

    def __init__(self, app: App, func: Callable[P, R], config: TaskConfig) -> None:
        self.app = app
        self.func = func
        self.config = config
        self.name = config.name
        self.is_async = inspect.iscoroutinefunction(func)
        self.codec = ArgumentCodec(func, config.name)
        self._task = self
        self._options = EnqueueOptions()
        # Resolved rows (all but args) per options value: options are resolved and validated once,
        # not for every job of a bulk enqueue (docs/performance.md).
        self._row_templates: dict[EnqueueOptions, EnqueueRow] = {}
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.config.queue!r}>"

    def configure(
        self,
        *,
        queue: str | None = None,
        priority: int | None = None,
        countdown: float | timedelta | None = None,
        eta: datetime | None = None,
        expires: float | timedelta | datetime | None = None,
        max_attempts: int | None = None,
        unique_key: str | None = None,
    ) -> ConfiguredTask[P]:
        """Fix some enqueue options; returns an object with the same delay/apply_async API."""
        return ConfiguredTask(self, EnqueueOptions(
            queue=queue, priority=priority, countdown=countdown, eta=eta, expires=expires,
            max_attempts=max_attempts, unique_key=unique_key,
        ))

    def _row(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: EnqueueOptions) -> Any:
        try:
            template, cacheable = self._row_templates.get(options), True
        except TypeError:  # an unhashable option value: build_row() below says what is wrong with it
            template, cacheable = None, False
        if template is None:
            template = build_row(self.name, "", options, self.config.defaults())
            if cacheable and len(self._row_templates) < _MAX_ROW_TEMPLATES:  # a fresh eta each call: no cache
                self._row_templates[options] = template
        row = msgspec.structs.replace(template, args=self.codec.encode(args, kwargs))
        if row.unique_key is None and self.config.unique is not None:  # an explicit unique_key wins
            key = self.config.unique.key(self.name, self.codec.normalized(row.args))
            row = msgspec.structs.replace(row, unique_key=key)
        return row

    def _enqueue(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: EnqueueOptions,
                 connection: Connection[Any] | None) -> JobRef:
        row = self._row(args, kwargs, options)
        if self.app._eager is not None:  # pgtasks.testing.eager(): run inline, no database
            return self.app._eager.run(self, row)  # type: ignore[no-any-return]
        job_id = self.app._insert(row, connection)
        return JobRef(job_id, self.name, self.app)

    async def _aenqueue(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: EnqueueOptions,
                        connection: AsyncConnection[Any] | None) -> JobRef:
        row = self._row(args, kwargs, options)
        if self.app._eager is not None:
            return await self.app._eager.arun(self, row)  # type: ignore[no-any-return]
        job_id = await self.app._ainsert(row, connection)
        return JobRef(job_id, self.name, self.app)


def default_retry() -> RetryPolicy:
    return Backoff()
