"""Runs one claimed job (sync on a thread, async on the loop) and turns what happened into an Outcome."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from pgtasks.core.context import JobContext, ProgressSink, set_current_job
from pgtasks.core.errors import Cancel, JobTimeoutError, Retry, Snooze, UnknownTaskError
from pgtasks.core.failures import recorded_type
from pgtasks.core.hooks import JobEvent
from pgtasks.core.logs import log_event
from pgtasks.core.models import ClaimedJob, ErrorEntry, Outcome
from pgtasks.core.retry import Backoff, RetryPolicy
from pgtasks.worker.threads import ElasticThreadPool

if TYPE_CHECKING:
    from pgtasks.core.definition import TaskDefinition
    from pgtasks.core.registry import Registry
    from pgtasks.worker.cancel import CancelRegistry

logger = logging.getLogger("pgtasks.worker")
_RESULT_ENCODER = msgspec.json.Encoder()
_UNKNOWN_TASK_RETRY = Backoff(base=5.0, max_delay=600.0)


# Frames in files under this directory are pgtasks' own (executor, thread pool, ...).
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent) + os.sep


def _error(job: ClaimedJob, exc: BaseException, *, with_traceback: bool = True) -> ErrorEntry:
    type_name, module = recorded_type(exc)
    return ErrorEntry(
        attempt=job.attempt,
        at=datetime.now(UTC),
        type=type_name,
        message=str(exc),
        traceback=user_traceback(exc) if with_traceback else None,
        module=module,
    )


def user_traceback(exc: BaseException) -> str:
    """The formatted traceback from the first frame outside pgtasks: the task function first.

    The frames above it (the executor invoking the task, the thread pool running it) are the same
    for every job and only push the user's code down. Frames of pgtasks called *by* the task stay,
    and a failure inside pgtasks itself (no user frame at all) keeps every frame.
    """
    first = exc.__traceback__
    while first is not None and first.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        first = first.tb_next
    return "".join(traceback.format_exception(type(exc), exc, first or exc.__traceback__))


class Executor:
    """Executes jobs for one worker. Never raises for task failures; CancelledError propagates."""

    def __init__(self, registry: Registry[Any], worker_id: str, threads: ElasticThreadPool,
                 cancels: CancelRegistry | None = None) -> None:
        self.registry = registry
        self.worker_id = worker_id
        self.threads = threads
        self.cancels = cancels
        self.progress: ProgressSink | None = None  # set by the worker once its pool is open

    async def run(self, job: ClaimedJob) -> Outcome:
        started = time.perf_counter()
        hooks = self.registry.hooks
        event = None
        if hooks:  # one truth test when no hook is registered
            event = JobEvent(job.id, job.task, job.queue, job.attempt, job.max_attempts, self.worker_id,
                             traceparent=job.traceparent)
            await hooks.run(hooks.before, event, "before_job")
        outcome = await self._run(job, event)
        # The job's log line is the completer's, once the outcome is recorded (see completer.JobLine).
        if event is not None:
            event.state, event.duration = outcome.state.value, time.perf_counter() - started
            await hooks.run(hooks.after, event, "after_job")
        return outcome

    async def _run(self, job: ClaimedJob, event: JobEvent | None = None) -> Outcome:
        if job.expired:
            error = ErrorEntry(job.attempt, datetime.now(UTC), "Expired", "the job expired before it could run")
            return Outcome.cancelled(job, error)
        task = self.registry.tasks.get(job.task)
        if task is None:
            missing = UnknownTaskError(
                f"task {job.task!r} is not registered in this worker (pid-local registry has "
                f"{len(self.registry.tasks)} tasks); deploy code that defines it, or check the --app module"
            )
            return self._failed(job, missing, _UNKNOWN_TASK_RETRY, with_traceback=False)
        context = JobContext(job.id, job.task, job.queue, job.attempt, job.max_attempts, job.created_at,
                             self.worker_id, claims=job.claims, progress_sink=self.progress)
        if self.cancels is None:
            return await self._attempt(task, job, context, event)
        # Registered while running, so `pgtasks jobs cancel` can reach it.
        self.cancels.add(job.id, context, asyncio.current_task() if task.is_async else None)
        try:
            outcome = await self._attempt(task, job, context, event)
        except asyncio.CancelledError:
            if not self.cancels.requested(job.id):
                raise  # shutdown, not a cancel request
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            outcome = Outcome.cancelled(job)
        finally:
            self.cancels.remove(job.id)
        if context.cancelled:
            error = ErrorEntry(job.attempt, datetime.now(UTC), "Cancelled", "cancelled on request while running")
            return Outcome.cancelled(job, error)
        return outcome

    async def _attempt(self, task: TaskDefinition[Any, Any], job: ClaimedJob, context: JobContext,
                       event: JobEvent | None) -> Outcome:
        try:
            result = await self._invoke(task, job, context)
        except Snooze as snooze:
            return Outcome.snoozed(job, snooze.seconds)
        except Cancel as cancel:
            return Outcome.cancelled(job, _error(job, cancel, with_traceback=False))
        except Retry as retry:
            return self._failed(job, retry, task.config.retry, retry_in=retry.in_, with_traceback=False)
        except JobTimeoutError as exc:  # say which limit, without a traceback of the event loop
            return await self._failure(job, task, event, exc, with_traceback=False)
        except Exception as exc:  # noqa: BLE001 - any task failure becomes a retry, by design
            return await self._failure(job, task, event, exc)
        stored = self._encode_result(job, result) if task.config.store_result else None
        return Outcome.completed(job, stored)

    async def _failure(self, job: ClaimedJob, task: TaskDefinition[Any, Any], event: JobEvent | None, exc: Exception, *,
                       with_traceback: bool = True) -> Outcome:
        if event is not None:
            event.error = exc
            await self.registry.hooks.run(self.registry.hooks.error, event, "on_error")
        return self._failed(job, exc, task.config.retry, with_traceback=with_traceback)

    async def _invoke(self, task: TaskDefinition[Any, Any], job: ClaimedJob, context: JobContext) -> Any:
        args, kwargs = task.codec.decode(job.args)
        timeout = task.config.timeout
        if task.is_async:
            # Each job runs in its own asyncio task, so this context var is private to it.
            set_current_job(context)
            awaitable: Any = task.func(*args, **kwargs)
        else:
            ctx = contextvars.copy_context()
            ctx.run(set_current_job, context)
            awaitable = self.threads.run_async(lambda: ctx.run(task.func, *args, **kwargs))
        if timeout is None:
            return await awaitable
        # asyncio.timeout, not wait_for: no extra task per job, and no lost shutdown cancel on
        # Python 3.11 (see pgtasks/aio.py). expired() tells our limit from a TimeoutError the
        # task raised itself, which stays an ordinary failure with its own traceback.
        limit = asyncio.timeout(timeout)
        try:
            async with limit:
                return await awaitable
        except TimeoutError as exc:
            if not limit.expired():
                raise
            if not task.is_async:
                # A thread cannot be interrupted: it finishes on its own and is not reused before that.
                log_event(logger, logging.WARNING, "job.thread_abandoned", job_id=job.id, task=job.task,
                          threads=self.threads.size)
            raise JobTimeoutError(f"task exceeded its timeout of {timeout}s") from exc

    def _failed(self, job: ClaimedJob, exc: BaseException, policy: RetryPolicy, *,
                retry_in: float | None = None, with_traceback: bool = True) -> Outcome:
        error = _error(job, exc, with_traceback=with_traceback)
        if job.attempt >= job.max_attempts:
            return Outcome.discarded(job, error)
        delay = retry_in if retry_in is not None else policy.delay(job.attempt)
        return Outcome.retry(job, delay, error)

    def _encode_result(self, job: ClaimedJob, result: Any) -> bytes | None:
        if result is None:
            return None
        try:
            return _RESULT_ENCODER.encode(result)
        except (TypeError, msgspec.EncodeError) as exc:
            log_event(logger, logging.WARNING, "job.result_not_stored", job_id=job.id, task=job.task,
                      reason=str(exc))
            return None
