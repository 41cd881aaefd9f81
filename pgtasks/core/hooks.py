"""Hooks: job middleware (before_job / after_job / on_error / on_retry) and worker lifecycle
(worker_ready / worker_shutdown) callbacks registered on the App."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("pgtasks.hooks")


@dataclass(slots=True)
class JobEvent:
    """What a hook sees of one attempt. The same object goes to before_job, on_error, on_retry,
    a task's own handlers and after_job, so `extra` can carry data between them (an OpenTelemetry
    span, a timer, a DB session)."""

    id: int
    task: str
    queue: str
    attempt: int
    max_attempts: int
    worker_id: str
    state: str | None = None  # the outcome: completed, retryable, discarded, cancelled, scheduled (after_job)
    duration: float | None = None  # seconds the attempt took (after_job)
    # What the task raised (on_error, on_retry, on_failure, after_job); for `raise Retry(...)`, the
    # exception it is for (Retry.error), else the Retry itself.
    error: BaseException | None = None
    traceparent: str | None = None  # the W3C trace context stored with the job at enqueue, if any
    extra: dict[str, Any] = field(default_factory=dict)
    # The decoded arguments, the same objects the task receives; empty for a task this worker does
    # not know, an expired job, or arguments that no longer decode (that failure is `error`).
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    result: Any = None  # what the task returned (on_success, after_job of a completed attempt)
    retry_in: float | None = None  # seconds until the next attempt (on_retry, after_job of a retry)


Hook = Callable[[JobEvent], "Awaitable[None] | None"]


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    """What worker_ready and worker_shutdown hooks see: the worker process they run in."""

    worker_id: str
    queues: tuple[str, ...]
    concurrency: int


WorkerHook = Callable[[WorkerEvent], "Awaitable[None] | None"]


class Hooks:
    """The hook lists of one App. Costs one truth test per job while no job hook is registered.

    Hooks run on the worker's event loop (sync ones inline, so keep them quick; async ones are
    awaited). before_job runs in the job's own context, so a contextvar it sets (a tracing
    context) is seen by the task, also by a sync task on its thread. A job hook that raises is
    logged (event hook.failed, with the traceback) and the job goes on: observability must not
    fail jobs. A worker_ready hook that raises stops the worker before it claims a job (set-up
    that failed would fail every job); a worker_shutdown hook that raises is logged and the next
    one runs.
    """

    def __init__(self) -> None:
        self.before: list[Hook] = []
        self.after: list[Hook] = []
        self.error: list[Hook] = []
        self.retry: list[Hook] = []
        self.worker_ready: list[WorkerHook] = []
        self.worker_shutdown: list[WorkerHook] = []

    def __bool__(self) -> bool:
        """True if a job hook is registered (the lifecycle hooks cost nothing per job)."""
        return bool(self.before or self.after or self.error or self.retry)

    async def run(self, hooks: Sequence[Hook], event: JobEvent, kind: str) -> None:
        for hook in list(hooks):
            try:
                result = hook(event)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - logged with its traceback; the job goes on
                _log_failed(hook, kind, exc, job_id=event.id, task=event.task)

    async def ready(self, event: WorkerEvent) -> None:
        """Run the worker_ready hooks in order; the first that raises is logged and re-raised."""
        for hook in list(self.worker_ready):
            try:
                result = hook(event)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                _log_failed(hook, "worker_ready", exc, worker_id=event.worker_id)
                raise

    async def shutdown(self, event: WorkerEvent) -> None:
        """Run every worker_shutdown hook in order; one that raises is logged and the next one runs."""
        for hook in list(self.worker_shutdown):
            try:
                result = hook(event)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - logged with its traceback; the stop goes on
                _log_failed(hook, "worker_shutdown", exc, worker_id=event.worker_id)


def _log_failed(hook: Callable[..., Any], kind: str, exc: Exception, **where: Any) -> None:
    fields = {"kind": kind, "hook": getattr(hook, "__qualname__", repr(hook)), **where,
              "error": f"{type(exc).__name__}: {exc}"}
    logger.error("hook.failed" + "".join(f" {k}=%s" for k in fields), *fields.values(),
                 exc_info=exc, extra={"event": "hook.failed", "fields": fields})
