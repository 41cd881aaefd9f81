"""Eager mode: `.delay()` runs the task inline and returns its outcome (Celery's task_always_eager)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
from psycopg import AsyncConnection, Connection

from pgtasks.client.results import CANCEL_REASON, CancelResult, JobRef, JobStatus, decode_result
from pgtasks.client.workflows import WorkflowRef
from pgtasks.core.context import JobContext, JobProgress, reset_current_job, set_current_job
from pgtasks.core.definition import TaskDefinition
from pgtasks.core.errors import Cancel, ConfigurationError, JobFailedError, JobStateError, Retry, Snooze
from pgtasks.core.failures import failure_error, recorded_type
from pgtasks.core.models import FINAL_STATES, EnqueueRow, WorkflowPlan

if TYPE_CHECKING:
    from pgtasks.app import App

_ids = itertools.count(-1, -1)  # eager jobs never touch the database: negative ids cannot collide
_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class EagerJobRef(JobRef):
    """The JobRef an eager `.delay()` returns: the job already ran, its outcome is held here.

    `result` is what JobRef.result reads: the return value, or the JobFailedError of a cancelled or
    discarded job (built as a wait() of a real job builds it: of the task's exception type where
    it can be imported).
    """

    outcome: str = "completed"  # completed, cancelled, discarded, retryable (Retry), scheduled (Snooze)
    result: Any = None
    error_type: str | None = None
    error_message: str | None = None
    queue: str = field(default="default")
    args: dict[str, Any] = field(default_factory=dict)
    context: JobContext | None = field(default=None, repr=False, compare=False)  # what the task saw
    error_module: str | None = None

    def __post_init__(self) -> None:
        if self.outcome in _FAILED and self.result is None:
            object.__setattr__(self, "result", self._error())

    def _error(self) -> JobFailedError:
        entry = {"type": self.error_type, "module": self.error_module, "message": self.error_message}
        return failure_error(self.id, self.outcome, entry)

    def state(self) -> str | None:
        return self.outcome

    async def astate(self) -> str | None:
        return self.outcome

    def status(self) -> JobStatus:
        error = self.result if isinstance(self.result, JobFailedError) else None
        return JobStatus(self.id, self.task, self.outcome, self.result, error)

    async def astatus(self) -> JobStatus:
        return self.status()

    def forget(self) -> None:
        """Drops the held result, as forget() drops a stored one; JobStateError for a Retry or Snooze outcome."""
        if self.outcome not in FINAL_STATES:
            raise JobStateError(f"eager job {self.id} ended {self.outcome} (recorded, not re-run): forget() drops "
                                "the result of a finished job")
        if self.outcome == "completed":
            object.__setattr__(self, "result", None)

    async def aforget(self) -> None:
        self.forget()

    def cancel(self, reason: str | None = None) -> CancelResult:
        """Returns "finished" (the task already ran), or "cancelled" for a Retry or Snooze outcome, which
        ends cancelled now."""
        if self.outcome in FINAL_STATES:
            return "finished"
        object.__setattr__(self, "outcome", "cancelled")
        object.__setattr__(self, "error_type", "Cancelled")
        object.__setattr__(self, "error_module", None)
        object.__setattr__(self, "error_message", reason or CANCEL_REASON)
        object.__setattr__(self, "result", self._error())
        return "cancelled"

    async def acancel(self, reason: str | None = None) -> CancelResult:
        return self.cancel(reason)

    def progress(self) -> JobProgress | None:
        """The task's last current_job().set_progress(), kept in memory (nothing is stored in eager mode)."""
        return None if self.context is None else self.context.progress

    async def aprogress(self) -> JobProgress | None:
        return self.progress()

    def wait(self, timeout: float | None = None, *, poll_interval: float = 1.0, listen: bool = True,
             propagate: bool = True) -> Any:
        if self.outcome == "retryable":
            error = self._error()
        elif isinstance(self.result, JobFailedError):
            error = self.result
        else:
            return self.result
        if propagate:
            raise error
        return error

    async def await_result(self, timeout: float | None = None, *, poll_interval: float = 1.0,
                           listen: bool = True, propagate: bool = True) -> Any:
        return self.wait(timeout, propagate=propagate)


_FAILED = ("cancelled", "discarded")


def _run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # A sync .delay() of an async task from inside a running loop: run it on a loop of its own.
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
            box["error"] = exc

    thread = threading.Thread(target=target, name="pgtasks-eager")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


class EagerEnqueuer:
    """The Enqueuer of eager mode: runs each enqueued call inline instead of inserting it.

    Arguments are encoded and decoded as the worker would do (so argument errors still surface
    at .delay()), the task runs with a JobContext, and its return value makes the same msgspec
    round trip a stored result makes. Connections passed in are ignored: nothing is written.
    """

    def __init__(self, app: App, propagate: bool) -> None:
        self.app = app
        self.propagate = propagate
        self.refs: list[EagerJobRef] = []

    def enqueue(self, task: TaskDefinition[Any, Any], row: EnqueueRow, connection: Connection[Any] | None) -> JobRef:
        return self.run(task, row)

    async def aenqueue(self, task: TaskDefinition[Any, Any], row: EnqueueRow,
                       connection: AsyncConnection[Any] | None) -> JobRef:
        return await self.arun(task, row)

    def enqueue_many(self, tasks: Sequence[TaskDefinition[Any, Any]], rows: Sequence[EnqueueRow],
                     connection: Connection[Any] | None) -> list[JobRef]:
        return [self.run(task, row) for task, row in zip(tasks, rows, strict=True)]

    async def aenqueue_many(self, tasks: Sequence[TaskDefinition[Any, Any]], rows: Sequence[EnqueueRow],
                            connection: AsyncConnection[Any] | None) -> list[JobRef]:
        return [await self.arun(task, row) for task, row in zip(tasks, rows, strict=True)]

    def enqueue_workflow(self, plan: WorkflowPlan, connection: Connection[Any] | None) -> WorkflowRef:
        raise _no_workflows()

    async def aenqueue_workflow(self, plan: WorkflowPlan, connection: AsyncConnection[Any] | None) -> WorkflowRef:
        raise _no_workflows()

    def _context(self, task: TaskDefinition[Any, Any], row: EnqueueRow, job_id: int) -> JobContext:
        return JobContext(job_id, task.name, row.queue, 1, row.max_attempts, datetime.now(UTC), "eager")

    def _settle(self, task: TaskDefinition[Any, Any], row: EnqueueRow, job_id: int, run: Any,
                context: JobContext) -> EagerJobRef:
        args = msgspec.json.decode(row.args)
        common: dict[str, Any] = {"queue": row.queue, "args": args, "context": context}
        try:
            value = run()
        except Snooze as snooze:
            ref = EagerJobRef(job_id, task.name, self.app, outcome="scheduled", error_type="Snooze",
                              error_message=str(snooze), **common)
        except Retry as retry:
            cause = retry.error  # recorded as the worker records it: the exception the retry is for
            retry_type, retry_module = ("Retry", None) if cause is None else recorded_type(cause)
            ref = EagerJobRef(job_id, task.name, self.app, outcome="retryable", error_type=retry_type,
                              error_module=retry_module, error_message=str(retry if cause is None else cause),
                              **common)
        except Cancel as cancel:
            ref = EagerJobRef(job_id, task.name, self.app, outcome="cancelled", error_type="Cancel",
                              error_message=str(cancel), **common)
        except Exception as exc:
            if self.propagate:
                raise
            error_type, error_module = recorded_type(exc)
            ref = EagerJobRef(job_id, task.name, self.app, outcome="discarded", error_type=error_type,
                              error_module=error_module, error_message=str(exc), **common)
        else:
            result = None
            if task.config.store_result and value is not None:
                result = decode_result(self.app.tasks, task.name, job_id, _ENCODER.encode(value).decode())
            ref = EagerJobRef(job_id, task.name, self.app, result=result, **common)
        self.refs.append(ref)
        return ref

    def run(self, task: TaskDefinition[Any, Any], row: EnqueueRow) -> EagerJobRef:
        job_id = next(_ids)
        args, kwargs = task.codec.decode(row.args)
        context = self._context(task, row, job_id)

        def call() -> Any:
            token = set_current_job(context)
            try:
                if task.is_async:  # asyncio.run copies this context, current_job() included
                    return _run_coroutine(task.func(*args, **kwargs))
                return task.func(*args, **kwargs)
            finally:
                reset_current_job(token)

        return self._settle(task, row, job_id, call, context)

    async def arun(self, task: TaskDefinition[Any, Any], row: EnqueueRow) -> EagerJobRef:
        job_id = next(_ids)
        args, kwargs = task.codec.decode(row.args)
        context = self._context(task, row, job_id)
        if not task.is_async:
            return self.run(task, row)
        # Run the coroutine in a task of its own, so current_job() is private to it.
        outcome: dict[str, Any] = {}

        async def body() -> None:
            set_current_job(context)
            try:
                outcome["value"] = await task.func(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - re-raised in _settle's frame
                outcome["error"] = exc

        await asyncio.create_task(body())

        def replay() -> Any:
            if "error" in outcome:
                raise outcome["error"]
            return outcome.get("value")

        return self._settle(task, row, job_id, replay, context)


def _no_workflows() -> ConfigurationError:
    # A workflow is advanced by the database (its triggers), which eager mode never writes to.
    return ConfigurationError("workflows (chain, group, chord, link) do not run in eager mode: they are advanced "
                              "by the database; run them with pgtasks.testing.drain(app) instead")


@contextlib.contextmanager
def eager(app: App, *, propagate: bool = True) -> Iterator[list[EagerJobRef]]:
    """Within this block, `.delay()` / `.apply_async()` / `.adelay()` of `app`'s tasks run inline.

    Nothing is written to the database. Yields the list of EagerJobRefs in call order. With
    `propagate=True` (the default) an exception from the task is raised at the call site; with
    False it is recorded (`ref.state() == "discarded"`, and `ref.wait()` raises). Retry and
    Snooze are recorded, not re-run.
    """
    if isinstance(app.enqueuer, EagerEnqueuer):
        raise ConfigurationError("eager(app) is already active for this App; nest no second one")
    previous, runner = app.enqueuer, EagerEnqueuer(app, propagate)
    app.enqueuer = runner
    try:
        yield runner.refs
    finally:
        app.enqueuer = previous
