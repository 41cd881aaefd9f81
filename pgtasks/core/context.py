"""The job that the current task code is running for: `pgtasks.current_job()`."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from datetime import datetime

from pgtasks.core.errors import PgtasksError


@dataclass(slots=True)
class JobContext:
    """What a running task may ask about its own job."""

    id: int
    task: str
    queue: str
    attempt: int
    max_attempts: int
    created_at: datetime
    worker_id: str
    cancelled: bool = field(default=False)


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("pgtasks_current_job", default=None)


def current_job() -> JobContext:
    """The job being run by this task invocation; raises outside a worker."""
    job = _current.get()
    if job is None:
        raise PgtasksError("current_job() is only available inside a task run by a pgtasks worker")
    return job


def set_current_job(job: JobContext | None) -> contextvars.Token[JobContext | None]:
    return _current.set(job)


def reset_current_job(token: contextvars.Token[JobContext | None]) -> None:
    """Undo the set_current_job() that returned `token`."""
    _current.reset(token)
