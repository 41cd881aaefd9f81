"""Queries of limits.sql: the limited claim, the limits a worker's code declares, and the CLI's view."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from psycopg import AsyncConnection, Connection

from pgtasks.core.limits import QueueLimits, TaskLimits
from pgtasks.core.models import ClaimedJob
from pgtasks.storage.base import StoreBase
from pgtasks.storage.steps import Operation, every, one, select_dicts

# Claimable jobs of a limited queue looked at per claim, in priority order: enough that keys at
# their limit at the head of a queue do not hide the jobs of other keys behind them in most
# backlogs, few enough that a claim reads a bounded part of the index (docs/limits.md).
LIMITED_SCAN = 500


@dataclass(frozen=True, slots=True)
class LimitedClaim:
    """What a limited claim took, and why it stopped: `held` when a limit held back a ready job,
    `wake_in` the seconds until the soonest rate limit among those has a token again."""

    jobs: list[ClaimedJob]
    held: bool = False
    wake_in: float | None = None
    limited_queues: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeclaredLimits:
    """What a worker's start wrote: the queues and tasks whose stored limits it changed."""

    queues: list[str]
    tasks: list[str]
    forgotten: list[str]


class LimitStore(StoreBase):
    async def ajob_fetch_limited(self, conn: AsyncConnection[Any], *, queues: Sequence[str], limit: int,
                                 worker_id: str, now: datetime | None = None, scan: int = LIMITED_SCAN,
                                 tasks: Sequence[str] | None = None) -> LimitedClaim:
        """Claim up to `limit` jobs of the limited queues among `queues`, within every limit; only
        jobs of `tasks` when given."""
        return await self.arun(conn, _fetch_limited(self.queries, queues, limit, worker_id, now, scan, tasks),
                               transaction=True)

    def job_fetch_limited(self, conn: Connection[Any], *, queues: Sequence[str], limit: int, worker_id: str,
                          now: datetime | None = None, scan: int = LIMITED_SCAN,
                          tasks: Sequence[str] | None = None) -> LimitedClaim:
        return self.run(conn, _fetch_limited(self.queries, queues, limit, worker_id, now, scan, tasks),
                        transaction=True)

    async def alimited_queues(self, conn: AsyncConnection[Any], queues: Sequence[str]) -> list[str]:
        """The queues among `queues` that have a limit, or a task with one."""
        rows = await self.arun(conn, _limited_queues(self.queries, queues))
        return rows

    async def alimits_declare(self, conn: AsyncConnection[Any], queue_limits: Mapping[str, QueueLimits],
                              tasks: Mapping[str, tuple[str, TaskLimits | None]]) -> DeclaredLimits:
        """Write the limits the code declares: `tasks` maps each registered task to (its queue, its
        limits or None). One transaction, so a claim sees all of them or none."""
        return await self.arun(conn, _declare(self.queries, queue_limits, tasks), transaction=True)

    def limits_declare(self, conn: Connection[Any], queue_limits: Mapping[str, QueueLimits],
                       tasks: Mapping[str, tuple[str, TaskLimits | None]]) -> DeclaredLimits:
        return self.run(conn, _declare(self.queries, queue_limits, tasks), transaction=True)

    def limits_queue_set(self, conn: Connection[Any], name: str, limits: QueueLimits, *, clear: bool = False,
                         clear_rate: bool = False) -> dict[str, Any] | None:
        params = {"name": name, "concurrency": limits.concurrency,
                  "rate": limits.rate.rate if limits.rate else None,
                  "burst": limits.rate.burst if limits.rate else None, "clear": clear, "clear_rate": clear_rate}
        rows = self.run(conn, select_dicts(self.queries["limits_queue_set"], params))
        return rows[0] if rows else None

    def limits_list(self, conn: Connection[Any], now: datetime | None = None) -> list[dict[str, Any]]:
        """Every queue and task limit with its jobs running, ready and held back (limits.sql)."""
        return self.run(conn, select_dicts(self.queries["limits_list"], {"now": now}))


def _limited_queues(q: Mapping[str, Any], queues: Sequence[str]) -> Operation[list[str]]:
    rows = yield every(q["limits_limited_queues"], {"queues": list(queues)})
    return [str(r[0]) for r in rows]


def _fetch_limited(q: Mapping[str, Any], queues: Sequence[str], limit: int, worker_id: str,
                   now: datetime | None, scan: int, tasks: Sequence[str] | None = None) -> Operation[LimitedClaim]:
    locked = yield every(q["limits_lock_queues"], {"queues": list(queues)})
    names = [str(r[0]) for r in locked]
    if not names:
        return LimitedClaim([], limited_queues=())
    params = {"queues": names, "limit": limit, "worker_id": worker_id, "now": now, "scan": max(scan, limit),
              "tasks": None if tasks is None else list(tasks)}
    rows = yield every(q["job_fetch_limited"], params)
    jobs = [ClaimedJob(*row[:12]) for row in rows if row[0] is not None]
    marker = next((row for row in rows if row[0] is None), None)
    return LimitedClaim(jobs, held=marker is not None, wake_in=marker[12] if marker else None,
                        limited_queues=tuple(names))


def _declare(q: Mapping[str, Any], queue_limits: Mapping[str, QueueLimits],
             tasks: Mapping[str, tuple[str, TaskLimits | None]]) -> Operation[DeclaredLimits]:
    changed_queues: list[str] = []
    for name, limits in sorted(queue_limits.items()):
        declared = limits.declared()
        row = yield one(q["limits_queue_declare"], {"name": name, **declared,
                                                     "declared": msgspec.json.encode(declared).decode()})
        if row is not None:
            changed_queues.append(name)
    changed_tasks: list[str] = []
    for task, (queue, task_limits) in sorted(tasks.items()):
        if task_limits is None:
            continue
        row = yield one(q["limits_task_declare"], {"task": task, "queue": queue, **task_limits.row()})
        if row is not None:
            changed_tasks.append(task)
    unlimited = [task for task, (_, task_limits) in tasks.items() if task_limits is None]
    forgotten: list[str] = []
    if unlimited:
        rows = yield every(q["limits_task_forget"], {"tasks": unlimited})
        forgotten = sorted(str(r[0]) for r in rows)
    return DeclaredLimits(changed_queues, changed_tasks, forgotten)
