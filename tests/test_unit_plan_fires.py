"""plan_fires(): which ticks a scheduler pass records after a schedule's cursor. Pure arithmetic, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pgtasks.core.definition import TaskConfig, TaskDefinition
from pgtasks.core.schedules import PeriodicSchedule, make_schedule
from pgtasks.leadership.scheduler import PlannedFire, plan_fires

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
GRACE = timedelta(seconds=15)


def minutely(catch_up: str, limit: int = 100) -> PeriodicSchedule:
    def job() -> None: ...

    return make_schedule(TaskDefinition(job, TaskConfig.create("job")), cron="* * * * *", every=None, args=(),
                         kwargs=None, timezone=None, catch_up=catch_up, catch_up_limit=limit, name=None)


def test_a_tick_on_time_is_enqueued_whatever_the_policy() -> None:
    for policy in ("latest", "skip", "all"):
        assert plan_fires(minutely(policy), T0, T0 + MINUTE + timedelta(seconds=5), GRACE) == [
            PlannedFire(T0 + MINUTE, True)]


def test_nothing_is_due_before_the_next_tick() -> None:
    assert plan_fires(minutely("all"), T0, T0 + timedelta(seconds=59), GRACE) == []


@pytest.mark.parametrize(("policy", "expected"), [
    # Five ticks missed (1..5 minutes), none on time at 5 min 30 s.
    ("latest", [PlannedFire(T0 + 5 * MINUTE, True, 4)]),
    ("skip", [PlannedFire(T0 + 5 * MINUTE, False, 5)]),
    ("all", [PlannedFire(T0 + m * MINUTE, True) for m in range(1, 6)]),
])
def test_missed_ticks_follow_the_catch_up_policy(policy: str, expected: list[PlannedFire]) -> None:
    assert plan_fires(minutely(policy), T0, T0 + 5 * MINUTE + timedelta(seconds=30), GRACE) == expected


def test_latest_with_a_tick_on_time_records_the_missed_ones_as_skipped() -> None:
    plan = plan_fires(minutely("latest"), T0, T0 + 3 * MINUTE + timedelta(seconds=5), GRACE)
    assert plan == [PlannedFire(T0 + 2 * MINUTE, False, 2), PlannedFire(T0 + 3 * MINUTE, True)]


def test_all_keeps_only_the_newest_catch_up_limit_and_counts_the_rest() -> None:
    plan = plan_fires(minutely("all", limit=2), T0, T0 + 5 * MINUTE + timedelta(seconds=30), GRACE)
    assert plan == [PlannedFire(T0 + 3 * MINUTE, False, 3), PlannedFire(T0 + 4 * MINUTE, True),
                    PlannedFire(T0 + 5 * MINUTE, True)]
