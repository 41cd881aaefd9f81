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
from pgtasks.core.models import ClaimedJob, ErrorEntry, JobState, Outcome
from pgtasks.core.retry import Backoff, RetryPolicy
from pgtasks.worker.soft_timeout import SoftLimit, SoftLimited
from pgtasks.worker.threads import ElasticThreadPool

if TYPE_CHECKING:
    from pgtasks.core.definition import TaskDefinition, TaskHandlers
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


# What a job's stored arguments decoded to: (args, kwargs), the exception decoding raised (the
# attempt fails with it, like a task's exception), or None when the task is unknown or the job expired.
_Call = tuple[tuple[Any, ...], dict[str, Any]] | Exception | None

_HANDLER_KINDS = {JobState.RETRYABLE: "retry", JobState.DISCARDED: "failure", JobState.COMPLETED: "success"}


def _decode(task: TaskDefinition[Any, Any] | None, job: ClaimedJob) -> _Call:
    """Decoded once, before before_job, so hooks see the arguments the task receives."""
    if task is None or job.expired:
        return None
    try:
        return task.codec.decode(job.args)
    except Exception as exc:  # noqa: BLE001 - raised again as the attempt's failure (Executor._attempt)
        return exc


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
        task = self.registry.tasks.get(job.task)
        call = _decode(task, job)
        handlers = task.config.handlers if task is not None else None
        event = None
        if hooks or handlers is not None:  # one truth test when no hook is registered
            args, kwargs = call if isinstance(call, tuple) else ((), {})
            event = JobEvent(job.id, job.task, job.queue, job.attempt, job.max_attempts, self.worker_id,
                             traceparent=job.traceparent, args=args, kwargs=kwargs)
            await hooks.run(hooks.before, event, "before_job")
        outcome = await self._run(job, task, call, event)
        # The job's log line is the completer's, once the outcome is recorded (see completer.JobLine).
        if event is not None:
            event.state, event.duration = outcome.state.value, time.perf_counter() - started
            if outcome.state is JobState.RETRYABLE:
                event.retry_in = outcome.retry_in
            if task is not None:
                await self._settled(outcome, event, handlers)
            await hooks.run(hooks.after, event, "after_job")
        return outcome

    async def _settled(self, outcome: Outcome, event: JobEvent, handlers: TaskHandlers | None) -> None:
        """on_retry (the App's, then the task's), or the task's on_failure / on_success."""
        hooks = self.registry.hooks
        state = outcome.state
        if state is JobState.RETRYABLE:
            await hooks.run(hooks.retry, event, "on_retry")
        if handlers is None:
            return
        handler = {JobState.RETRYABLE: handlers.on_retry, JobState.DISCARDED: handlers.on_failure,
                   JobState.COMPLETED: handlers.on_success}.get(state)
        if handler is not None:
            await hooks.run((handler,), event, f"{event.task}.on_{_HANDLER_KINDS[state]}")

    async def _run(self, job: ClaimedJob, task: TaskDefinition[Any, Any] | None, call: _Call,
                   event: JobEvent | None) -> Outcome:
        if job.expired:
            error = ErrorEntry(job.attempt, datetime.now(UTC), "Expired", "the job expired before it could run")
            return Outcome.cancelled(job, error)
        if task is None:
            missing = UnknownTaskError(
                f"task {job.task!r} is not registered in this worker (pid-local registry has "
                f"{len(self.registry.tasks)} tasks); deploy code that defines it, or check the --app module"
            )
            return self._failed(job, missing, _UNKNOWN_TASK_RETRY, with_traceback=False)
        context = JobContext(job.id, job.task, job.queue, job.attempt, job.max_attempts, job.created_at,
                             self.worker_id, claims=job.claims, progress_sink=self.progress)
        if self.cancels is None:
            return await self._attempt(task, job, call, context, event)
        # Registered while running, so `pgtasks jobs cancel` can reach it.
        self.cancels.add(job.id, context, asyncio.current_task() if task.is_async else None)
        try:
            outcome = await self._attempt(task, job, call, context, event)
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

    async def _attempt(self, task: TaskDefinition[Any, Any], job: ClaimedJob, call: _Call, context: JobContext,
                       event: JobEvent | None) -> Outcome:
        try:
            if not isinstance(call, tuple):  # the stored arguments did not decode: this attempt fails
                assert call is not None
                raise call
            result = await self._invoke(task, job, call, context)
        except Snooze as snooze:
            return Outcome.snoozed(job, snooze.seconds)
        except Cancel as cancel:
            return Outcome.cancelled(job, _error(job, cancel, with_traceback=False))
        except Retry as retry:
            original = retry.error
            if event is not None:
                event.error = original if original is not None else retry
            if original is None:
                return self._failed(job, retry, task.config.retry, retry_in=retry.in_, with_traceback=False)
            return self._failed(job, original, task.config.retry, retry_in=retry.in_)
        except JobTimeoutError as exc:  # say which limit, without a traceback of the event loop
            return await self._failure(job, task, event, exc, with_traceback=False)
        except Exception as exc:  # noqa: BLE001 - a task failure becomes a retry unless the task says otherwise
            return await self._failure(job, task, event, exc)
        if event is not None:
            event.result = result
        stored = self._encode_result(job, result) if task.config.store_result else None
        return Outcome.completed(job, stored)

    async def _failure(self, job: ClaimedJob, task: TaskDefinition[Any, Any], event: JobEvent | None, exc: Exception, *,
                       with_traceback: bool = True) -> Outcome:
        if event is not None:
            event.error = exc
            await self.registry.hooks.run(self.registry.hooks.error, event, "on_error")
        return self._failed(job, exc, task.config.retry, with_traceback=with_traceback,
                            retried=task.config.retries(exc))

    async def _invoke(self, task: TaskDefinition[Any, Any], job: ClaimedJob,
                      call: tuple[tuple[Any, ...], dict[str, Any]], context: JobContext) -> Any:
        args, kwargs = call
        timeout, soft = task.config.timeout, task.config.soft_timeout
        limit = None
        if soft is not None:
            limit = SoftLimit(soft, context, hard=timeout, on_expired=lambda: log_event(
                logger, logging.WARNING, "job.soft_timeout", job_id=job.id, task=job.task, soft_timeout_s=soft))
        handle = None
        if task.is_async:
            # Each job runs in its own asyncio task, so this context var is private to it.
            set_current_job(context)
            awaitable: Any = task.func(*args, **kwargs)
            if limit is not None:  # armed when first awaited, disarmed when it returns
                awaitable = SoftLimited(awaitable, limit)
        else:
            ctx = contextvars.copy_context()
            ctx.run(set_current_job, context)
            awaitable = self.threads.run_async(lambda: ctx.run(task.func, *args, **kwargs))
            if limit is not None:  # a thread cannot be interrupted: the task polls the flag
                handle = limit.arm(None)
        try:
            if timeout is None:
                return await awaitable
            return await self._hard_limited(task, job, awaitable, timeout)
        finally:
            if handle is not None:
                handle.cancel()

    async def _hard_limited(self, task: TaskDefinition[Any, Any], job: ClaimedJob, awaitable: Any,
                            timeout: float) -> Any:
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
                retry_in: float | None = None, with_traceback: bool = True, retried: bool = True) -> Outcome:
        error = _error(job, exc, with_traceback=with_traceback)
        if not retried or job.attempt >= job.max_attempts:
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
