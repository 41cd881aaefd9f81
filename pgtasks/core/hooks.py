"""Job middleware hooks: before_job / after_job / on_error callbacks registered on the App."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("pgtasks.hooks")


@dataclass(slots=True)
class JobEvent:
    """What a hook sees of one attempt. The same object goes to before_job, on_error and after_job,
    so `extra` can carry data between them (an OpenTelemetry span, a timer, a DB session)."""

    id: int
    task: str
    queue: str
    attempt: int
    max_attempts: int
    worker_id: str
    state: str | None = None  # the outcome: completed, retryable, discarded, cancelled, scheduled (after_job)
    duration: float | None = None  # seconds the attempt took (after_job)
    error: BaseException | None = None  # the exception the task raised, if any (on_error, after_job)
    traceparent: str | None = None  # the W3C trace context stored with the job at enqueue, if any
    extra: dict[str, Any] = field(default_factory=dict)


Hook = Callable[[JobEvent], "Awaitable[None] | None"]


class Hooks:
    """The hook lists of one App. Costs one truth test per job while none are registered.

    Hooks run on the worker's event loop (sync ones inline, so keep them quick; async ones are
    awaited). before_job runs in the job's own context, so a contextvar it sets (a tracing
    context) is seen by the task, also by a sync task on its thread. A hook that raises is logged
    (event hook.failed, with the traceback) and the job goes on: observability must not fail jobs.
    """

    def __init__(self) -> None:
        self.before: list[Hook] = []
        self.after: list[Hook] = []
        self.error: list[Hook] = []

    def __bool__(self) -> bool:
        return bool(self.before or self.after or self.error)

    async def run(self, hooks: list[Hook], event: JobEvent, kind: str) -> None:
        for hook in list(hooks):
            try:
                result = hook(event)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                fields = {"kind": kind, "hook": getattr(hook, "__qualname__", repr(hook)), "job_id": event.id,
                          "task": event.task, "error": f"{type(exc).__name__}: {exc}"}
                logger.error("hook.failed" + "".join(f" {k}=%s" for k in fields), *fields.values(),
                             exc_info=exc, extra={"event": "hook.failed", "fields": fields})
