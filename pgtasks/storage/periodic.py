"""Queries of periodic.sql: fire records (the cursor of each schedule) and the tick transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, LiteralString

from psycopg import AsyncConnection, Connection

from pgtasks.core.models import EnqueueRow, FireResult, LastFire
from pgtasks.storage import jobs
from pgtasks.storage.base import StoreBase
from pgtasks.storage.steps import Operation, every, execute, one

Queries = Mapping[str, LiteralString]
# A scheduler that stalls inside a tick's transaction must not hold the tick's key for long:
# the server ends the session after this long idle in it, and waits on the key are bounded too.
TICK_TIMEOUT_MS = "5000"


def fire(q: Queries, params: dict[str, Any], row: EnqueueRow | None, *, overlap: bool) -> Operation[FireResult]:
    """Record one tick and, when `row` is given, enqueue its job; run it in one transaction."""
    yield execute(q["periodic_fire_timeouts_set"], {"idle_ms": TICK_TIMEOUT_MS, "lock_ms": TICK_TIMEOUT_MS})
    claimed = yield one(q["periodic_fire_record"], params)
    if claimed is None:
        return FireResult(recorded=False)
    if row is None:
        return FireResult(recorded=True)
    if not overlap:
        unfinished = yield one(q["periodic_unfinished_run"], params)
        if unfinished is not None:
            yield execute(q["periodic_fire_set_skipped"], params)
            return FireResult(recorded=True, unfinished_job_id=int(unfinished[0]))
    job_id = yield from jobs.insert(q, row)
    yield execute(q["periodic_fire_set_job"], {**params, "job_id": job_id})
    return FireResult(recorded=True, job_id=job_id)


def last_fires(q: Queries, names: Sequence[str]) -> Operation[dict[str, LastFire]]:
    rows = yield every(q["periodic_last_fires"], {"names": list(names)})
    return {row[0]: LastFire(*row) for row in rows}


def _recorded(q: Queries, params: dict[str, Any]) -> Operation[bool]:
    return (yield one(q["periodic_fire_record"], params)) is not None


def _names(q: Queries) -> Operation[list[str]]:
    return [str(row[0]) for row in (yield every(q["periodic_schedule_names"]))]


class PeriodicStore(StoreBase):
    async def aperiodic_fire(self, conn: AsyncConnection[Any], *, schedule: str, fire_time: datetime,
                             row: EnqueueRow | None, missed: int = 0, leader_term: int | None = None,
                             now: datetime | None = None, overlap: bool = True) -> FireResult:
        """Record one tick and, when `row` is given, enqueue its job in the same transaction.

        With overlap=False and the job of the previous enqueued tick unfinished, the tick is
        recorded as skipped instead and nothing is enqueued.
        """
        params = {"schedule": schedule, "fire_time": fire_time, "outcome": "skipped" if row is None else "enqueued",
                  "missed": missed, "leader_term": leader_term, "now": now}
        return await self.arun(conn, fire(self.queries, params, row, overlap=overlap), transaction=True)

    async def aperiodic_register(self, conn: AsyncConnection[Any], *, schedule: str, fire_time: datetime,
                                 leader_term: int | None = None) -> bool:
        """Record the moment a schedule was first seen: ticks after it are due, none before."""
        params = {"schedule": schedule, "fire_time": fire_time, "outcome": "registered", "missed": 0,
                  "leader_term": leader_term, "now": None}
        return await self.arun(conn, _recorded(self.queries, params))

    async def aperiodic_last_fires(self, conn: AsyncConnection[Any], names: Sequence[str]) -> dict[str, LastFire]:
        return await self.arun(conn, last_fires(self.queries, names))

    def periodic_last_fires(self, conn: Connection[Any], names: Sequence[str]) -> dict[str, LastFire]:
        return self.run(conn, last_fires(self.queries, names))

    def periodic_schedule_names(self, conn: Connection[Any]) -> list[str]:
        return self.run(conn, _names(self.queries))
