"""The periodic scheduler: turns due ticks of `@app.periodic` schedules into jobs, each tick at most once."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from pgtasks.core.logs import log_event
from pgtasks.core.registry import Registry
from pgtasks.core.schedules import PeriodicSchedule
from pgtasks.leadership.elector import Elector, LeaderService
from pgtasks.storage.store import Store

logger = logging.getLogger("pgtasks.periodic")

# A tick enqueued at most this late counts as on time: ordinary scheduling lag and a leader
# failover (a few seconds) lose nothing. Older ticks were missed (downtime) and follow the
# schedule's catch-up policy. Workers use max(this, 1.5 x leader_ttl).
DEFAULT_GRACE = timedelta(seconds=15)
# The longest the scheduler sleeps between passes (it wakes earlier, at the next tick).
MAX_SLEEP = 5.0
# How far missed ticks are counted for the record; the count is informational.
MISSED_COUNT_CAP = 10_000
_ONE_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class PlannedFire:
    """One tick to record: enqueue its job, or record it as skipped; `missed` older ticks folded in."""

    fire_time: datetime
    enqueue: bool
    missed: int = 0


def plan_fires(schedule: PeriodicSchedule, last: datetime, now: datetime, grace: timedelta) -> list[PlannedFire]:
    """The ticks to record after the cursor `last`, at `now`: pure arithmetic, no I/O.

    Ticks no older than `grace` are on time and enqueued whatever the policy. Older ones were
    missed while no leader ran: the schedule's catch-up policy decides (latest, skip, all up to
    catch_up_limit), and the rest is counted into `missed` of the tick that records them.
    """
    horizon = now - grace
    on_time = sorted(schedule.ticks_back(now, after=max(last, horizon - _ONE_US)))
    latest_missed = next(schedule.ticks_back(horizon - _ONE_US, after=last), None)
    plan: list[PlannedFire] = []
    if latest_missed is not None:
        missed = schedule.count_between(last, latest_missed, MISSED_COUNT_CAP)
        if schedule.catch_up == "skip" or (schedule.catch_up == "latest" and on_time):
            plan.append(PlannedFire(latest_missed, False, missed))
        elif schedule.catch_up == "latest":
            plan.append(PlannedFire(latest_missed, True, missed - 1))
        else:  # "all", bounded by catch_up_limit: the newest ones run, older ones are dropped
            taken = list(itertools.islice(schedule.ticks_back(latest_missed, after=last), schedule.catch_up_limit))
            dropped = missed - len(taken)
            if dropped > 0:
                newest_dropped = next(schedule.ticks_back(taken[-1] - _ONE_US, after=last))
                plan.append(PlannedFire(newest_dropped, False, dropped))
            plan.extend(PlannedFire(tick, True) for tick in reversed(taken))
    plan.extend(PlannedFire(tick, True) for tick in on_time)
    return plan


@dataclass(frozen=True, slots=True)
class Fire:
    """One tick this scheduler recorded: enqueued (with its job), skipped, the first sighting
    ("registered"), or "overlap": skipped because the previous run (job_id) had not finished."""

    schedule: str
    fire_time: datetime
    outcome: str
    job_id: int | None = None
    missed: int = 0


class PeriodicScheduler(LeaderService):
    """Leader-only: enqueues the due ticks of every schedule of the app.

    Each pass reads every schedule's cursor (its newest fire record) from the database, so a new
    leader continues exactly where the old one stopped. Each tick is inserted together with its
    fire record in one transaction; the record's primary key (schedule, fire_time) turns a second
    insert of the same tick, by this or any other process, into a no-op.
    """

    name = "periodic"

    def __init__(
        self,
        registry: Registry[Any],
        store: Store,
        pool: AsyncConnectionPool[Any],
        *,
        elector: Elector | None = None,
        grace: timedelta = DEFAULT_GRACE,
        max_sleep: float = MAX_SLEEP,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(max_sleep, elector)
        self.registry = registry
        self._pool = pool
        self._store = store
        self.grace = grace
        self.max_sleep = max_sleep
        self._clock = clock
        self.enqueued = 0

    async def run_once(self, now: datetime | None = None) -> None:
        await self.tick(now)

    async def tick(self, now: datetime | None = None) -> list[Fire]:
        """One pass over every schedule at `now` (default: the clock); returns what it recorded."""
        schedules = list(self.registry.schedules.values())
        if not schedules or not self.may_act():
            self.interval = self.max_sleep
            return []
        at = now if now is not None else self._clock()
        fires: list[Fire] = []
        async with self._pool.connection() as conn:
            cursors = await self._store.aperiodic_last_fires(conn, [s.name for s in schedules])
            for schedule in schedules:
                if not self.may_act():
                    break
                cursor = cursors.get(schedule.name)
                last = cursor.last_time if cursor is not None else None
                fires.extend(await self._schedule(conn, schedule, last, at))
        self.enqueued += sum(1 for f in fires if f.outcome == "enqueued")
        if now is None:
            # Sleep until the next tick of any schedule (a little after it), at most max_sleep.
            upcoming = min(s.next_after(at) for s in schedules)
            self.interval = min(self.max_sleep, max(0.01, (upcoming - self._clock()).total_seconds() + 0.005))
        return fires

    async def _schedule(self, conn: AsyncConnection[Any], schedule: PeriodicSchedule, last: datetime | None,
                        now: datetime) -> list[Fire]:
        if last is None:
            # First sighting: ticks after this moment are due. Recording it makes a leader that
            # takes over before the first tick still fire it.
            if await self._store.aperiodic_register(conn, schedule=schedule.name, fire_time=now,
                                                    leader_term=self.term):
                log_event(logger, logging.INFO, "periodic.registered", schedule=schedule.name,
                          spec=schedule.spec, next_fire=schedule.next_after(now).isoformat())
                return [Fire(schedule.name, now, "registered")]
            return []
        plan = plan_fires(schedule, last, now, self.grace)
        fires: list[Fire] = []
        for planned in plan:
            if not self.may_act():  # leadership lost during a long catch-up: stop between ticks
                break
            fire_time, enqueue, missed = planned.fire_time, planned.enqueue, planned.missed
            result = await self._store.aperiodic_fire(
                conn, schedule=schedule.name, fire_time=fire_time, row=schedule.row if enqueue else None,
                missed=missed, leader_term=self.term, overlap=schedule.overlap)
            if not result.recorded:
                log_event(logger, logging.DEBUG, "periodic.already_fired", schedule=schedule.name,
                          fire_time=fire_time.isoformat())
                continue
            job_id = result.job_id
            if result.unfinished_job_id is not None:
                fires.append(Fire(schedule.name, fire_time, "overlap", result.unfinished_job_id, missed))
                # INFO, not WARNING: the schedule asked for this, and with short ticks it repeats.
                log_event(logger, logging.INFO, "periodic.skipped_overlap", schedule=schedule.name,
                          fire_time=fire_time.isoformat(), unfinished_job_id=result.unfinished_job_id,
                          reason="overlap=False and the previous run has not finished")
                continue
            outcome = "enqueued" if enqueue else "skipped"
            fires.append(Fire(schedule.name, fire_time, outcome, job_id, missed))
            if enqueue:
                log_event(logger, logging.INFO, "periodic.enqueued", schedule=schedule.name, task=schedule.task.name,
                          queue=schedule.row.queue, fire_time=fire_time.isoformat(), job_id=job_id, missed=missed)
            else:
                log_event(logger, logging.WARNING, "periodic.skipped", schedule=schedule.name,
                          fire_time=fire_time.isoformat(), missed=missed, catch_up=schedule.catch_up)
        return fires
