"""Stores the progress a worker's tasks report (`current_job().set_progress()`), throttled.

A task may call set_progress() in a tight loop, thousands of times a second, from a thread (sync
tasks) or the event loop (async ones). Each call only replaces the job's pending value under a
lock; one background task writes whatever is pending in one statement, then waits `interval`
before the next write. So a worker costs at most 1/interval statements a second however many jobs
report and however often, a task never waits on the database, and the value stored is always the
latest one reported.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from pgtasks.core.errors import DatabaseError
from pgtasks.core.logs import log_event
from pgtasks.storage.store import Store

logger = logging.getLogger("pgtasks.worker")

# Two writes a second: a progress bar that moves every half second reads as live, and a worker
# running hundreds of reporting jobs still adds two small UPDATEs a second to the database.
PROGRESS_INTERVAL = 0.5


class ProgressWriter:
    """The worker's ProgressSink: keeps the latest report per job, writes them in batches."""

    def __init__(self, pool: AsyncConnectionPool[Any], store: Store, *, interval: float = PROGRESS_INTERVAL) -> None:
        self.pool = pool
        self.store = store
        self.interval = interval
        self.writes = 0  # statements sent, for tests and metrics
        self._pending: dict[int, tuple[int, bytes]] = {}
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="pgtasks-progress")

    def report(self, job_id: int, claims: int, payload: bytes) -> None:
        """Keep `payload` as the job's latest progress; wakes the writer when nothing was pending."""
        if self._closed:
            # A sync task abandoned after its timeout may still report after the worker stopped:
            # its attempt is over, and set_progress() must not fail it for a closed event loop.
            return
        with self._lock:
            was_idle = not self._pending
            self._pending[job_id] = (claims, payload)
        if was_idle and self._loop is not None:
            # Once per batch, not per call: a loop of reports between two writes costs a dict store each.
            self._loop.call_soon_threadsafe(self._wake.set)

    async def stop(self) -> None:
        """Write what is still pending (the last values of jobs that just ended), then stop."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._flush()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()
            await asyncio.sleep(self.interval)

    def _take(self) -> list[tuple[int, int, bytes]]:
        with self._lock:
            pending, self._pending = self._pending, {}
        return [(job_id, claims, payload) for job_id, (claims, payload) in pending.items()]

    def _give_back(self, batch: list[tuple[int, int, bytes]]) -> None:
        """Keep a batch that could not be written for the next round, unless newer values came in."""
        with self._lock:
            for job_id, claims, payload in batch:
                self._pending.setdefault(job_id, (claims, payload))
        self._wake.set()

    async def _flush(self) -> None:
        batch = self._take()
        if not batch:
            return
        try:
            async with self.pool.connection() as conn:
                await self.store.ajob_set_progress_many(conn, batch)
            self.writes += 1
        except (DatabaseError, psycopg.Error, TimeoutError) as exc:
            # Progress is advisory: a lost connection must not fail or slow the jobs reporting it.
            log_event(logger, logging.WARNING, "job.progress_not_stored", jobs=len(batch),
                      error=f"{type(exc).__name__}: {exc}")
            self._give_back(batch)
