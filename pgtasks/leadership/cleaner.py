"""The cleaner: deletes finished jobs past their retention, old fire records, dead worker rows, and
per-key token buckets that have filled up again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from pgtasks.core.errors import ConfigurationError
from pgtasks.core.logs import log_event
from pgtasks.leadership.elector import Elector, LeaderService
from pgtasks.storage.store import Store

logger = logging.getLogger("pgtasks.cleaner")

BATCH_SIZE = 1000
# A pass stops after this many batches per kind and leaves the rest to the next pass, so one
# pass never holds the leader's connection for long after a large backlog builds up.
MAX_BATCHES = 50
# Workflows deleted per statement: batch_size divided by this (each takes all of its jobs along).
WORKFLOW_BATCH_DIVISOR = 10
# Seconds to the next pass while a pass stopped at MAX_BATCHES with rows left. Waiting the full
# interval instead would cap deletion at MAX_BATCHES * BATCH_SIZE rows a minute (~830 rows/s),
# below what one worker completes, so the table would grow for as long as the load lasts.
BACKLOG_PAUSE = 1.0


@dataclass(frozen=True, slots=True)
class Retention:
    """How long finished rows are kept; None keeps them forever."""

    completed: timedelta | None = timedelta(hours=24)
    cancelled: timedelta | None = timedelta(hours=24)
    discarded: timedelta | None = timedelta(days=7)
    periodic_fires: timedelta | None = timedelta(days=7)
    dead_workers: timedelta | None = timedelta(hours=1)

    def __post_init__(self) -> None:
        for name in ("completed", "cancelled", "discarded", "periodic_fires", "dead_workers"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, timedelta) or value < timedelta(0)):
                raise ConfigurationError(
                    f"Retention({name}={value!r}): expected a timedelta >= 0, or None to keep forever"
                )


@dataclass(slots=True)
class CleanReport:
    """What one cleaner pass deleted, and in how many DELETE statements."""

    jobs: dict[str, int] = field(default_factory=dict)
    workflows: int = 0
    workflow_jobs: int = 0  # the jobs of those workflows (not in `jobs`)
    periodic_fires: int = 0
    dead_workers: int = 0
    key_buckets: int = 0  # per-key token buckets full again (a key without one has a full bucket)
    batches: int = 0
    backlog: bool = False  # some kind stopped at max_batches with full batches: rows are left

    @property
    def total(self) -> int:
        return (sum(self.jobs.values()) + self.workflow_jobs + self.workflows + self.periodic_fires
                + self.dead_workers + self.key_buckets)


class Cleaner(LeaderService):
    """Leader-only: deletes rows past `retention`, `batch_size` rows per statement.

    Each batch is its own short statement that picks rows with FOR UPDATE SKIP LOCKED under a
    LIMIT, so it never waits on a row someone else holds and never locks many rows at once.
    """

    name = "cleaner"

    def __init__(self, pool: AsyncConnectionPool[Any], store: Store, *, retention: Retention | None = None,
                 interval: float = 60.0, elector: Elector | None = None, batch_size: int = BATCH_SIZE,
                 max_batches: int = MAX_BATCHES) -> None:
        super().__init__(interval, elector)
        if batch_size < 1 or max_batches < 1:
            raise ConfigurationError(f"Cleaner(batch_size={batch_size!r}, max_batches={max_batches!r}): both >= 1")
        self._pool = pool
        self._store = store
        self.retention = retention or Retention()
        self.batch_size = batch_size
        self.max_batches = max_batches
        self.base_interval = interval

    async def run_once(self, now: datetime | None = None) -> None:
        report = await self.clean(now)
        # A backlog is worked off in short pauses; then back to the configured interval.
        self.interval = min(BACKLOG_PAUSE, self.base_interval) if report.backlog else self.base_interval

    async def clean(self, now: datetime | None = None) -> CleanReport:
        report = CleanReport()
        r = self.retention
        store, limit = self._store, self.batch_size
        for state, keep in (("completed", r.completed), ("cancelled", r.cancelled), ("discarded", r.discarded)):
            if keep is not None:
                report.jobs[state] = await self._batches(report, partial(
                    store.ajob_delete_finished, state=state, retention=keep.total_seconds(), limit=limit, now=now))
        await self._workflows(report, now)
        if r.periodic_fires is not None:
            report.periodic_fires = await self._batches(report, partial(
                store.aperiodic_fire_prune, retention=r.periodic_fires.total_seconds(), limit=limit, now=now))
        if r.dead_workers is not None:
            report.dead_workers = await self._batches(report, partial(
                store.aworker_prune_dead, retention=r.dead_workers.total_seconds(), limit=limit, now=now))
        # Not a retention: a full bucket's row says nothing a missing row does not, so it always goes.
        report.key_buckets = await self._batches(report, partial(store.akey_bucket_prune, limit=limit, now=now))
        if report.total:
            log_event(logger, logging.INFO, "cleaner.deleted", batches=report.batches, backlog=report.backlog,
                      periodic_fires=report.periodic_fires, dead_workers=report.dead_workers,
                      key_buckets=report.key_buckets,
                      workflows=report.workflows, workflow_jobs=report.workflow_jobs,
                      **{f"jobs_{state}": count for state, count in report.jobs.items()})
        return report

    async def _workflows(self, report: CleanReport, now: datetime | None) -> None:
        """Whole workflows, once every job of one is finished and past its state's retention: a
        workflow's rows go together, so `workflows show` never finds half of one."""
        r = self.retention
        retention = {state: None if keep is None else keep.total_seconds()
                     for state, keep in (("completed", r.completed), ("cancelled", r.cancelled),
                                         ("discarded", r.discarded))}
        # A workflow is many jobs: fewer of them per statement keep each statement's locks few.
        limit = max(1, self.batch_size // WORKFLOW_BATCH_DIVISOR)
        for _ in range(self.max_batches):
            if not self.may_act():
                break
            async with self._pool.connection() as conn:
                workflows, jobs = await self._store.aworkflow_delete_finished(conn, retention=retention,
                                                                              limit=limit, now=now)
            report.batches += 1
            report.workflows += workflows
            report.workflow_jobs += jobs
            if workflows < limit:
                break
            await asyncio.sleep(0)
        else:
            report.backlog = True

    async def _batches(self, report: CleanReport,
                       delete: Callable[[AsyncConnection[Any]], Awaitable[int]]) -> int:
        deleted = 0
        for _ in range(self.max_batches):
            if not self.may_act():
                break
            async with self._pool.connection() as conn:
                count = await delete(conn)
            report.batches += 1
            deleted += count
            if count < self.batch_size:
                break
            await asyncio.sleep(0)  # let the worker's own work interleave between batches
        else:
            report.backlog = True
        return deleted
