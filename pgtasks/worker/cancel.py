"""Operator cancellation of running jobs: which jobs this worker runs, and telling them to stop."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from pgtasks.core.context import JobContext
from pgtasks.core.logs import log_event
from pgtasks.core.service import IntervalService
from pgtasks.storage.store import Store

logger = logging.getLogger("pgtasks.worker")


@dataclass(slots=True)
class _Running:
    context: JobContext
    task: asyncio.Task[Any] | None  # the asyncio task of an async job; None for a sync job on a thread
    requested: bool = False


class CancelRegistry:
    """The jobs this worker is running, so a cancel request can reach them.

    An async job's asyncio task is cancelled (the task sees CancelledError at its next await);
    a sync job cannot be interrupted, so its JobContext.cancelled turns True for the task to
    check (`pgtasks.current_job().cancelled`). Either way the attempt's outcome is cancelled.
    """

    def __init__(self) -> None:
        self._running: dict[int, _Running] = {}

    def add(self, job_id: int, context: JobContext, task: asyncio.Task[Any] | None) -> None:
        self._running[job_id] = _Running(context, task)

    def remove(self, job_id: int) -> None:
        self._running.pop(job_id, None)

    def requested(self, job_id: int) -> bool:
        entry = self._running.get(job_id)
        return entry is not None and entry.requested

    def ids(self) -> list[int]:
        return list(self._running)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._running

    def request(self, job_id: int) -> bool:
        """Tell a running job to stop; False if this worker does not run it (any more)."""
        entry = self._running.get(job_id)
        if entry is None:
            return False
        if not entry.requested:
            entry.requested = True
            entry.context.cancelled = True
            if entry.task is not None:
                entry.task.cancel()
            log_event(logger, logging.INFO, "job.cancel_requested", job_id=job_id, task=entry.context.task,
                      mode="sync" if entry.task is None else "async")
        return True


class CancelWatcher(IntervalService):
    """Every poll interval (and at once when the control channel says so), asks the database which
    of this worker's running jobs an operator wants cancelled. One primary-key lookup, and none at
    all while the worker runs nothing."""

    name = "cancel_watcher"

    def __init__(self, pool: AsyncConnectionPool[Any], store: Store, registry: CancelRegistry,
                 interval: float) -> None:
        super().__init__(interval)
        self._pool = pool
        self._store = store
        self._registry = registry

    async def run_once(self, now: datetime | None = None) -> None:
        ids = self._registry.ids()
        if not ids:
            return
        with self._store.errors():  # a pool timeout counts as a database outage too
            async with self._pool.connection() as conn:
                wanted = await self._store.ajob_list_cancel_requested(conn, ids)
        for job_id in wanted:
            self._registry.request(job_id)

    def on_control(self, payload: str) -> None:
        """A control-channel notification (payload: a job id): check now if it is one of ours."""
        try:
            job_id = int(payload)
        except ValueError:
            log_event(logger, logging.WARNING, "control.unknown_message", payload=payload[:100])
            return
        if job_id in self._registry:
            self.poke()
