"""Task objects: the decorated function plus typed, transactional enqueueing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, Unpack

from psycopg import AsyncConnection, Connection

from pgtasks.client.canvas import Canvas, Signature, StepOptions, TaskHost
from pgtasks.client.enqueue import Enqueuer
from pgtasks.client.results import JobRef
from pgtasks.core.definition import TaskConfig, TaskDefinition
from pgtasks.core.errors import ConfigurationError, TaskArgumentError
from pgtasks.core.models import EnqueueRow
from pgtasks.core.options import EnqueueOptions

__all__ = ["Call", "ConfiguredTask", "JobRef", "Task", "TaskConfig", "TaskHost", "aenqueue_calls", "enqueue_calls"]

P = ParamSpec("P")
R = TypeVar("R")

# A task bound to its arguments and options: `task.s(1, x=2)`; the name bulk enqueueing has always used.
Call = Signature


class JobOptions(StepOptions, total=False):
    """The per-job options of apply_async() and configure(); None keeps the task's default. A
    workflow step's options (StepOptions) and a unique key, which a step cannot hold."""

    unique_key: str | None


class _EnqueueApi(Generic[P]):
    """The enqueue API shared by Task, ConfiguredTask and a Blueprint's tasks; `options` are the
    per-call defaults."""

    _options: EnqueueOptions

    @property
    def _task(self) -> Task[Any, Any]:
        """The registered Task that enqueues: looked up at each call, so a Blueprint's task (and a
        ConfiguredTask of one) reaches the App that added its blueprint, whenever that happened."""
        raise NotImplementedError

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> JobRef:
        """Enqueue with these arguments; joins the app's bound transaction if there is one."""
        return self._task._enqueue(args, kwargs, self._options, None)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> JobRef:
        """Async twin of delay(), for psycopg AsyncConnection users."""
        return await self._task._aenqueue(args, kwargs, self._options, None)

    def apply_async(self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, *,
                    connection: Connection[Any] | None = None, link: Canvas | list[Signature] | None = None,
                    link_error: Signature | None = None, **options: Unpack[JobOptions]) -> JobRef:
        """Enqueue with explicit options (Celery's signature); `connection` joins that transaction.

        Options: countdown (seconds or timedelta) or eta (an aware datetime), expires, priority,
        queue, max_attempts, unique_key; each overrides the task's default for this job.
        `link` (a signature, a list of them, or any workflow) runs after the job with its result,
        `link_error(job_id, error)` once if it fails: the job is then the first step of a workflow
        (docs/workflows.md), and the JobRef is the job's.
        """
        merged = self._options.merged(EnqueueOptions(**options))
        if link is not None or link_error is not None:
            return self._signature(tuple(args), kwargs or {}, merged).apply_async(
                connection=connection, link=link, link_error=link_error)
        return self._task._enqueue(tuple(args), kwargs or {}, merged, connection)

    async def aapply_async(self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, *,
                           connection: AsyncConnection[Any] | None = None,
                           link: Canvas | list[Signature] | None = None, link_error: Signature | None = None,
                           **options: Unpack[JobOptions]) -> JobRef:
        """Async twin of apply_async()."""
        merged = self._options.merged(EnqueueOptions(**options))
        if link is not None or link_error is not None:
            return await self._signature(tuple(args), kwargs or {}, merged).aapply_async(
                connection=connection, link=link, link_error=link_error)
        return await self._task._aenqueue(tuple(args), kwargs or {}, merged, connection)

    def _signature(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: EnqueueOptions,
                   *, immutable: bool = False) -> Signature:
        return Signature(self._task, args, kwargs, options, immutable=immutable, host=self._task.app)

    # Typed loosely on purpose: a workflow step's signature is partial (its first argument comes
    # from the previous step), which a ParamSpec cannot express. The arguments are bound against
    # the task's signature at .delay() instead, naming the step and parameter.
    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature: these arguments bound, nothing enqueued. A step of a chain, group or chord
        (it receives the previous step's result as its first argument), or a job for app.enqueue_many()."""
        return self._signature(args, kwargs, self._options)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: as a workflow step it ignores the previous step's result."""
        return self._signature(args, kwargs, self._options, immutable=True)

    def delay_many(self, calls: Iterable[tuple[Any, ...] | list[Any] | Call], *,
                   connection: Connection[Any] | None = None) -> list[JobRef]:
        """Enqueue many jobs of this task in one round trip; each item is an args tuple (or list) or a
        signature of this task, `task.s(x=1)`, with its own options (`task.configure(...).s(...)`)."""
        return enqueue_calls(self._task.app.enqueuer, self._calls(calls), connection)

    async def adelay_many(self, calls: Iterable[tuple[Any, ...] | list[Any] | Call], *,
                          connection: AsyncConnection[Any] | None = None) -> list[JobRef]:
        """Async twin of delay_many()."""
        return await aenqueue_calls(self._task.app.enqueuer, self._calls(calls), connection)

    def _calls(self, calls: Iterable[tuple[Any, ...] | list[Any] | Call]) -> list[Call]:
        task, options = self._task, self._options
        made: list[Call] = []
        for index, call in enumerate(calls):
            if isinstance(call, Call):
                if call.task is not task:
                    raise ConfigurationError(
                        f"delay_many() of {task.name}: item {index} is a signature of {call.task.name}; "
                        "enqueue jobs of several tasks with app.enqueue_many()")
                made.append(call)
            elif isinstance(call, tuple | list):
                made.append(Call(task, tuple(call), {}, options))
            else:
                raise TaskArgumentError(
                    f"delay_many() of {task.name}: item {index} is {type(call).__name__} {_clip(call)}; pass an "
                    f"args tuple, such as (1, 2), or a signature, such as {task.name.rsplit('.', 1)[-1]}.s(x=1)")
        return made


class ConfiguredTask(_EnqueueApi[P]):
    """A task with some enqueue options fixed: `task.configure(queue="mail").delay(...)`."""

    def __init__(self, task: _EnqueueApi[P], options: EnqueueOptions) -> None:
        self._source = task
        self._options = options

    @property
    def _task(self) -> Task[Any, Any]:
        return self._source._task

    def configure(self, **options: Unpack[JobOptions]) -> ConfiguredTask[P]:
        return ConfiguredTask(self._source, self._options.merged(EnqueueOptions(**options)))


class Task(TaskDefinition[P, R], _EnqueueApi[P]):
    """A registered task. Calling it runs the function inline; .delay() enqueues a job."""

    def __init__(self, app: TaskHost, func: Callable[P, R], config: TaskConfig) -> None:
        super().__init__(func, config)
        self.app = app
        self._options = EnqueueOptions()

    @property
    def _task(self) -> Task[Any, Any]:
        return self

    def configure(self, **options: Unpack[JobOptions]) -> ConfiguredTask[P]:
        """Fix some enqueue options (as apply_async takes them); returns an object with the same API."""
        return ConfiguredTask(self, EnqueueOptions(**options))

    def _enqueue(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: EnqueueOptions,
                 connection: Connection[Any] | None) -> JobRef:
        return self.app.enqueuer.enqueue(self, self.build_row(args, kwargs, options), connection)

    async def _aenqueue(self, args: tuple[Any, ...], kwargs: dict[str, Any], options: EnqueueOptions,
                        connection: AsyncConnection[Any] | None) -> JobRef:
        return await self.app.enqueuer.aenqueue(self, self.build_row(args, kwargs, options), connection)


def build_rows(calls: Sequence[Call]) -> list[EnqueueRow]:
    """The rows of `calls`, each task's calls validated and encoded as one batch (TaskDefinition.build_rows)."""
    by_task: dict[int, tuple[TaskDefinition[Any, Any], list[int]]] = {}
    for index, call in enumerate(calls):
        by_task.setdefault(id(call.task), (call.task, []))[1].append(index)
    if len(by_task) == 1:
        task = calls[0].task
        return task.build_rows([(call.args, call.kwargs, call.options) for call in calls])
    rows: list[EnqueueRow | None] = [None] * len(calls)
    for task, indexes in by_task.values():
        built = task.build_rows([(calls[i].args, calls[i].kwargs, calls[i].options) for i in indexes])
        for index, row in zip(indexes, built, strict=True):
            rows[index] = row
    return [row for row in rows if row is not None]


def enqueue_calls(enqueuer: Enqueuer, calls: Sequence[Call], connection: Connection[Any] | None) -> list[JobRef]:
    """Validate and insert many calls (of any tasks) in one round trip."""
    if not calls:
        return []
    rows = build_rows(calls)
    return enqueuer.enqueue_many([call.task for call in calls], rows, connection)


async def aenqueue_calls(enqueuer: Enqueuer, calls: Sequence[Call],
                         connection: AsyncConnection[Any] | None) -> list[JobRef]:
    """Async twin of enqueue_calls()."""
    if not calls:
        return []
    rows = build_rows(calls)
    return await enqueuer.aenqueue_many([call.task for call in calls], rows, connection)


def _clip(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
