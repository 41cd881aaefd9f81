"""Worker heartbeats: each worker process records that it is alive and which jobs it holds."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from pgtasks.core.errors import ConnectionLostError, DatabaseError
from pgtasks.core.logs import log_event
from pgtasks.core.service import IntervalService
from pgtasks.storage.store import Store

logger = logging.getLogger("pgtasks.heartbeat")


class Heartbeat(IntervalService):
    """Upserts this worker's row in `workers` every `interval` seconds.

    The row carries last_seen_at (the rescuer's liveness signal) and the ids of the jobs this
    worker holds: running ones and finished ones whose outcome is not written yet, because both
    still belong to this worker; and the "host:pid" of the `--processes N` supervisor it runs
    under, if any. `remove()` deletes the row on a graceful stop.
    """

    name = "heartbeat"

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        store: Store,
        *,
        worker_id: str,
        queues: Sequence[str],
        concurrency: int,
        held_jobs: Callable[[], Iterable[int]],
        interval: float,
        supervisor: str | None = None,
        tasks: Sequence[str] | None = None,
    ) -> None:
        super().__init__(interval)
        self._pool = pool
        self._store = store
        self.worker_id = worker_id
        self.queues = list(queues)
        self.concurrency = concurrency
        self._held_jobs = held_jobs
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.supervisor = supervisor
        self.tasks = None if tasks is None else sorted(tasks)  # the tasks this worker claims jobs of
        self.beats = 0

    async def run_once(self, now: datetime | None = None) -> None:
        held = sorted(set(self._held_jobs()))
        try:  # a hung round trip must not silence this worker for good: give up and beat again
            async with asyncio.timeout(max(1.0, 2 * self.interval)), self._pool.connection() as conn:
                await self._store.aworker_heartbeat(
                    conn, worker_id=self.worker_id, hostname=self.hostname, pid=self.pid, queues=self.queues,
                    concurrency=self.concurrency, running=held, now=now, supervisor=self.supervisor,
                    tasks=self.tasks)
        except TimeoutError:
            raise ConnectionLostError(f"heartbeat took longer than {max(1.0, 2 * self.interval):.2f}s") from None
        self.beats += 1

    async def remove(self) -> None:
        """Delete this worker's row; a failure is logged (the cleaner prunes the row later)."""
        try:
            async with self._pool.connection() as conn:
                await self._store.aworker_delete(conn, self.worker_id)
        except DatabaseError as exc:
            log_event(logger, logging.WARNING, "heartbeat.remove_failed", worker_id=self.worker_id, error=str(exc))
