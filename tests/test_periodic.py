"""Periodic schedules: decoration-time validation, tick arithmetic, catch-up after downtime, and the
at-most-once guarantee when two processes both act as leader."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import psycopg
import pytest

from pgtasks import App, ConfigurationError, crontab
from pgtasks.leadership.scheduler import Fire, PeriodicScheduler
from tests.conftest import ROOT
from tests.helpers import run_with_pool

T = TypeVar("T")
T0 = datetime(2024, 1, 1, 10, 0, 0, tzinfo=UTC)  # a Monday
MINUTE = timedelta(minutes=1)


def fires_of(conn: psycopg.Connection[Any], schema: str, schedule: str) -> list[tuple[datetime, str, int | None, int]]:
    rows = conn.execute(
        f'SELECT fire_time, outcome, job_id, missed FROM "{schema}".periodic_fires WHERE schedule = %s '
        "ORDER BY fire_time", (schedule,)).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def job_count(conn: psycopg.Connection[Any], schema: str) -> int:
    row = conn.execute(f'SELECT count(*) FROM "{schema}".jobs').fetchone()
    assert row is not None
    return int(row[0])


# -- decoration-time validation ------------------------------------------------------------------


def test_invalid_schedules_fail_at_decoration(app: App) -> None:
    @app.task
    def job(n: int = 0) -> None: ...

    cases: list[tuple[dict[str, Any], str]] = [
        ({"cron": "bad"}, "'bad'"),
        ({"cron": "61 * * * *"}, "'61 * * * *'"),
        ({"cron": "* * * * * * *"}, "7 fields"),
        ({"cron": "0 0 30 2 *"}, "never fires"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "'Mars/Olympus'"),
        ({"cron": "* * * * *", "every": timedelta(seconds=5)}, "exactly one of"),
        ({}, "exactly one of"),
        ({"every": timedelta(milliseconds=500)}, "at least one second"),
        ({"every": "5s"}, "expected a datetime.timedelta"),
        ({"every": 5, "timezone": "Europe/Paris"}, "only applies to cron"),
        ({"cron": "* * * * *", "catch_up": "some"}, "catch_up='some'"),
        ({"cron": "* * * * *", "catch_up": "all", "catch_up_limit": 0}, "catch_up_limit=0"),
        ({"cron": "* * * * *", "args": ("not an int",)}, "args/kwargs do not fit"),
        ({"cron": "* * * * *", "kwargs": {"nope": 1}}, "args/kwargs do not fit"),
    ]
    for options, fragment in cases:
        with pytest.raises(ConfigurationError) as info:
            app.periodic(**options)(job)
        assert fragment in str(info.value), (options, str(info.value))
    assert app.schedules == {}

    def plain() -> None: ...

    with pytest.raises(ConfigurationError, match=r"above @app\.task"):
        app.periodic(cron="* * * * *")(plain)  # type: ignore[type-var]

    app.periodic(cron="* * * * *", args=(1,))(job)
    with pytest.raises(ConfigurationError, match="already exists"):
        app.periodic(cron="*/5 * * * *")(job)
    app.periodic(cron="*/5 * * * *", name="job-every-5")(job)
    assert sorted(app.schedules) == sorted([job.name, "job-every-5"])


def test_decorator_returns_the_task_and_encodes_arguments_once(app: App) -> None:
    @app.periodic(every=timedelta(minutes=5), kwargs={"who": "ops"})
    @app.task(queue="reports")
    def nightly(who: str) -> str:
        return who

    assert nightly("x") == "x"  # still the task object, callable inline
    schedule = app.schedules[nightly.name]
    assert schedule.task is nightly
    assert schedule.row.queue == "reports" and json.loads(schedule.row.args) == {"who": "ops"}


def test_tick_arithmetic_cron_seconds_and_intervals(app: App) -> None:
    @app.periodic(cron="*/10 * * * * *", name="six-field")
    @app.periodic(cron="*/15 * * * *", name="five-field")
    @app.periodic(every=timedelta(seconds=90), name="interval")
    @app.task
    def job() -> None: ...

    six, five, interval = app.schedules["six-field"], app.schedules["five-field"], app.schedules["interval"]
    at = T0 + timedelta(seconds=1)
    assert six.next_after(at) == T0 + timedelta(seconds=10)  # 6 fields: seconds come first
    assert six.at_or_before(T0 + timedelta(seconds=10)) == T0 + timedelta(seconds=10)
    assert five.next_after(at) == T0 + timedelta(minutes=15)
    assert five.at_or_before(at) == T0
    # Intervals tick on whole multiples since the epoch, the same in every process.
    assert interval.next_after(T0) == T0 + timedelta(seconds=90)
    assert (interval.next_after(T0).timestamp() % 90) == 0
    assert list(five.ticks_back(T0 + timedelta(minutes=31), after=T0)) == [
        T0 + timedelta(minutes=30), T0 + timedelta(minutes=15)]
    assert five.count_between(T0, T0 + timedelta(hours=1), cap=100) == 4
    assert interval.count_between(T0, T0 + timedelta(hours=1), cap=100) == 40
    assert interval.count_between(T0, T0 + timedelta(hours=1), cap=7) == 7


def test_cron_follows_the_time_zone_and_croniters_dst_rules(app: App) -> None:
    @app.periodic(cron="0 9 * * *", timezone="Europe/Berlin", name="nine")
    @app.periodic(cron="30 2 * * *", timezone="Europe/Berlin", name="two-thirty")
    @app.task
    def job() -> None: ...

    nine, two_thirty = app.schedules["nine"], app.schedules["two-thirty"]
    assert nine.next_after(datetime(2024, 1, 10, tzinfo=UTC)) == datetime(2024, 1, 10, 8, tzinfo=UTC)  # CET
    assert nine.next_after(datetime(2024, 7, 10, tzinfo=UTC)) == datetime(2024, 7, 10, 7, tzinfo=UTC)  # CEST
    # Spring forward: 02:30 does not exist on 2024-03-31; croniter fires at 03:00 CEST instead.
    assert two_thirty.next_after(datetime(2024, 3, 30, 12, tzinfo=UTC)) == datetime(2024, 3, 31, 1, tzinfo=UTC)
    # Fall back: 02:30 happens twice on 2024-10-27; croniter fires at both instants.
    it = datetime(2024, 10, 26, 12, tzinfo=UTC)
    first = two_thirty.next_after(it)
    second = two_thirty.next_after(first)
    assert (first, second) == (datetime(2024, 10, 27, 0, 30, tzinfo=UTC), datetime(2024, 10, 27, 1, 30, tzinfo=UTC))


# -- the scheduler against the database ----------------------------------------------------------


def test_first_pass_registers_then_enqueues_each_due_tick_once(app: App, conn: psycopg.Connection[Any],
                                                               schema: str) -> None:
    @app.periodic(cron="* * * * *", name="minutely")
    @app.task
    def job() -> None: ...

    async def body(pool: Any) -> list[list[Fire]]:
        scheduler = PeriodicScheduler(app.registry, app.store, pool, grace=timedelta(seconds=10))
        return [await scheduler.tick(now=T0 + timedelta(seconds=30)),  # first sighting: nothing due yet
                await scheduler.tick(now=T0 + timedelta(seconds=61)),  # the 10:01 tick
                await scheduler.tick(now=T0 + timedelta(seconds=62)),  # same tick again: nothing
                await scheduler.tick(now=T0 + timedelta(seconds=121))]

    passes = run_with_pool(app, body)
    assert [[(f.outcome, f.fire_time) for f in p] for p in passes] == [
        [("registered", T0 + timedelta(seconds=30))],
        [("enqueued", T0 + MINUTE)],
        [],
        [("enqueued", T0 + 2 * MINUTE)],
    ]
    records = fires_of(conn, schema, "minutely")
    assert [r[1] for r in records] == ["registered", "enqueued", "enqueued"]
    assert job_count(conn, schema) == 2
    job_ids = [r[2] for r in records if r[1] == "enqueued"]
    tasks = conn.execute(f'SELECT task FROM "{schema}".jobs WHERE id = ANY(%s)', (job_ids,)).fetchall()
    assert tasks == [(job.name,), (job.name,)]


def test_overlap_false_skips_ticks_while_the_previous_run_is_unfinished(
    app: App, conn: psycopg.Connection[Any], schema: str
) -> None:
    @app.periodic(cron="* * * * *", name="exclusive", overlap=False)
    @app.periodic(cron="* * * * *", name="overlapping")
    @app.task
    def report() -> None: ...

    def set_state(job_id: int | None, state: str) -> None:
        conn.execute(f'UPDATE "{schema}".jobs SET state = %s WHERE id = %s', (state, job_id))

    async def body(pool: Any) -> list[dict[str, Fire]]:
        scheduler = PeriodicScheduler(app.registry, app.store, pool, grace=timedelta(seconds=10))
        passes = []
        for seconds, before in [(30, None), (61, None), (121, None), (181, "running"), (241, "completed")]:
            if before is not None:
                first_job = fires_of(conn, schema, "exclusive")[1][2]
                set_state(first_job, before)
            fires = await scheduler.tick(now=T0 + timedelta(seconds=seconds))
            passes.append({f.schedule: f for f in fires})
        return passes

    passes = run_with_pool(app, body)
    first_job = passes[1]["exclusive"].job_id
    assert [(p["exclusive"].outcome, p["exclusive"].job_id) for p in passes[2:]] == [
        ("overlap", first_job),  # 10:02: the 10:01 job is still queued
        ("overlap", first_job),  # 10:03: now it is running
        ("enqueued", passes[4]["exclusive"].job_id),  # 10:04: it completed
    ]
    assert passes[4]["exclusive"].job_id not in (None, first_job)
    assert [p["overlapping"].outcome for p in passes[1:]] == ["enqueued"] * 4  # the default: every tick
    assert [r[1] for r in fires_of(conn, schema, "exclusive")] == [
        "registered", "enqueued", "skipped", "skipped", "enqueued"]
    with pytest.raises(ConfigurationError, match="overlap='no'"):
        app.periodic(cron="* * * * *", name="bad", overlap="no")(report)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("policy", "expected_jobs", "expected_records"),
    [
        # Down from 10:01:30 to 10:10:30: ticks 10:02..10:10 (9) were missed, none is on time.
        ("latest", [10], [("enqueued", 10, 8)]),
        ("skip", [], [("skipped", 10, 9)]),
        ("all", [6, 7, 8, 9, 10], [("skipped", 5, 4), *[("enqueued", m, 0) for m in (6, 7, 8, 9, 10)]]),
    ],
)
def test_restart_after_downtime_follows_the_catch_up_policy(
    app: App, conn: psycopg.Connection[Any], schema: str, policy: str, expected_jobs: list[int],
    expected_records: list[tuple[str, int, int]],
) -> None:
    @app.periodic(cron="* * * * *", catch_up=policy, catch_up_limit=5, name="minutely")
    @app.task
    def job() -> None: ...

    async def before_downtime(pool: Any) -> None:
        scheduler = PeriodicScheduler(app.registry, app.store, pool, grace=timedelta(seconds=10))
        await scheduler.tick(now=T0 + timedelta(seconds=30))  # registered at 10:00:30
        await scheduler.tick(now=T0 + timedelta(seconds=61))  # 10:01 enqueued on time

    async def after_restart(pool: Any) -> tuple[list[Fire], list[Fire], list[Fire]]:
        # A new process: it knows nothing but the durable fire records.
        scheduler = PeriodicScheduler(app.registry, app.store, pool, grace=timedelta(seconds=10))
        restart = await scheduler.tick(now=T0 + timedelta(minutes=10, seconds=30))
        again = await scheduler.tick(now=T0 + timedelta(minutes=10, seconds=31))  # replays nothing
        next_tick = await scheduler.tick(now=T0 + timedelta(minutes=11, seconds=1))
        return restart, again, next_tick

    run_with_pool(app, before_downtime)
    restart, again, next_tick = run_with_pool(app, after_restart)

    def minute(m: int) -> datetime:
        return T0 + m * MINUTE

    assert [(f.outcome, f.fire_time, f.missed) for f in restart] == [
        (outcome, minute(m), missed) for outcome, m, missed in expected_records]
    assert [f.fire_time for f in restart if f.outcome == "enqueued"] == [minute(m) for m in expected_jobs]
    assert again == []
    # After the catch-up, the schedule simply carries on: 10:11 is on time under every policy.
    assert [(f.outcome, f.fire_time) for f in next_tick] == [("enqueued", minute(11))]
    assert job_count(conn, schema) == 1 + len(expected_jobs) + 1


def test_latest_prefers_an_on_time_tick_over_a_missed_one(app: App, conn: psycopg.Connection[Any],
                                                          schema: str) -> None:
    @app.periodic(cron="*/5 * * * *", name="five")
    @app.task
    def job() -> None: ...

    async def body(pool: Any) -> list[Fire]:
        scheduler = PeriodicScheduler(app.registry, app.store, pool, grace=timedelta(seconds=10))
        await scheduler.tick(now=T0 + timedelta(seconds=1))
        # Back at 10:30:05: 10:05..10:25 were missed, 10:30 is on time and stands for them.
        return await scheduler.tick(now=T0 + timedelta(minutes=30, seconds=5))

    fires = run_with_pool(app, body)
    assert [(f.outcome, f.fire_time, f.missed) for f in fires] == [
        ("skipped", T0 + timedelta(minutes=25), 5), ("enqueued", T0 + timedelta(minutes=30), 0)]
    assert job_count(conn, schema) == 1


def test_ticks_within_the_grace_are_all_enqueued_after_a_short_gap(app: App, conn: psycopg.Connection[Any],
                                                                   schema: str) -> None:
    """A leader failover shorter than the grace loses no tick, whatever the policy."""

    @app.periodic(every=timedelta(seconds=1), catch_up="skip", name="fast")
    @app.task
    def job() -> None: ...

    async def body(pool: Any) -> list[Fire]:
        scheduler = PeriodicScheduler(app.registry, app.store, pool, grace=timedelta(seconds=15))
        await scheduler.tick(now=T0 + timedelta(milliseconds=500))
        return await scheduler.tick(now=T0 + timedelta(seconds=6, milliseconds=500))

    fires = run_with_pool(app, body)
    assert [f.fire_time for f in fires] == [T0 + timedelta(seconds=s) for s in range(1, 7)]
    assert job_count(conn, schema) == 6


def test_two_schedulers_racing_in_one_process_enqueue_each_tick_once(app: App, conn: psycopg.Connection[Any],
                                                                     schema: str) -> None:
    @app.periodic(every=timedelta(seconds=1), name="fast")
    @app.task
    def job() -> None: ...

    async def body(pool: Any) -> tuple[int, int]:
        one = PeriodicScheduler(app.registry, app.store, pool)
        two = PeriodicScheduler(app.registry, app.store, pool)
        counts = [0, 0]
        for i in range(30):
            now = T0 + timedelta(seconds=i, milliseconds=100)
            results = await asyncio.gather(one.tick(now=now), two.tick(now=now))
            for k, fires in enumerate(results):
                counts[k] += sum(1 for f in fires if f.outcome == "enqueued")
        return counts[0], counts[1]

    first, second = run_with_pool(app, body)
    assert first + second == 29
    records = fires_of(conn, schema, "fast")
    enqueued = [r for r in records if r[1] == "enqueued"]
    assert [r[0] for r in enqueued] == [T0 + timedelta(seconds=s) for s in range(1, 30)]
    assert job_count(conn, schema) == 29 == len({r[2] for r in enqueued})


def test_two_processes_that_both_believe_they_lead_enqueue_each_tick_once(
    app: App, conn: psycopg.Connection[Any], schema: str, database_url: str,
) -> None:
    """Two real processes run the scheduler with no elector (as two leaders would), pass for pass
    in the same 50 ms slots over the same 20 ticks: the fire records' primary key lets exactly one
    insert per tick through, and the loser's job insert never happens."""
    env = {"PGTASKS_DATABASE_URL": database_url, "PGTASKS_SCHEMA": schema, "PYTHONPATH": str(ROOT),
           "PATH": "/usr/bin:/bin"}
    args = [sys.executable, "-m", "tests.apps.dual_scheduler", str(T0.timestamp()), "20"]
    procs = [subprocess.Popen(args, env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    # A barrier, not a fixed head start: both have imported and connected before either begins.
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n", proc.stderr
    start = time.time() + 0.2
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{start}\n")
        proc.stdin.flush()
    outputs = [proc.communicate(timeout=60) for proc in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    per_process = [json.loads(out.strip().splitlines()[-1])["enqueued_here"] for out, _ in outputs]
    records = fires_of(conn, schema, "every-second")
    enqueued = [r for r in records if r[1] == "enqueued"]
    assert [r[0] for r in enqueued] == [T0 + timedelta(seconds=s) for s in range(1, 21)]
    assert sum(per_process) == 20  # each tick was recorded by exactly one of the two
    assert min(per_process) > 0, per_process  # and both really competed for the ticks
    tick_jobs = conn.execute(f"SELECT id FROM \"{schema}\".jobs WHERE task = 'periodic.tick' ORDER BY id").fetchall()
    assert sorted(int(r[2] or 0) for r in enqueued) == [r[0] for r in tick_jobs]  # no job without its fire record


class _LeadsUntilAFire:
    """Stands in for the elector (only `is_leader` and `term` are read): leadership is lost the
    moment the scheduler has recorded its first tick, in the middle of a catch-up pass."""

    def __init__(self) -> None:
        self.is_leader = True
        self.term = 1


def test_leadership_lost_mid_catch_up_stops_the_pass_between_ticks(app: App, conn: psycopg.Connection[Any],
                                                                   schema: str) -> None:
    @app.periodic(cron="* * * * *", name="catch-up-all", catch_up="all")
    @app.task
    def job() -> None: ...

    elector = _LeadsUntilAFire()

    async def body(pool: Any) -> list[Fire]:
        scheduler = PeriodicScheduler(app.registry, app.store, pool, grace=timedelta(seconds=10),
                                      elector=elector)  # type: ignore[arg-type]
        await scheduler.tick(now=T0 + timedelta(seconds=30))  # first sighting
        fire = app.store.aperiodic_fire

        async def fire_then_lose_the_lease(*args: Any, **kwargs: Any) -> Any:
            result = await fire(*args, **kwargs)
            elector.is_leader = False
            return result

        app.store.aperiodic_fire = fire_then_lose_the_lease  # type: ignore[method-assign]
        try:
            return await scheduler.tick(now=T0 + 5 * MINUTE + timedelta(seconds=30))  # five ticks due
        finally:
            del app.store.aperiodic_fire

    fires = run_with_pool(app, body)
    assert [(f.outcome, f.fire_time) for f in fires] == [("enqueued", T0 + MINUTE)]
    assert [r[1] for r in fires_of(conn, schema, "catch-up-all")] == ["registered", "enqueued"]
    assert job_count(conn, schema) == 1


# -- Celery-style schedules: crontab(), per-schedule options, the App's time zone ----------------


def test_a_crontab_fires_only_on_days_both_fields_select_where_the_cron_string_fires_on_either(
    app: App, conn: psycopg.Connection[Any], schema: str,
) -> None:
    """The leader enqueues crontab(day_of_week=1, day_of_month='1-7') on the first Monday only, and the
    cron string '0 0 1-7 * 1' on every Monday and on each of the first seven days."""

    @app.periodic(cron=crontab(minute=0, hour=0, day_of_week=1, day_of_month="1-7"), name="celery")
    @app.periodic(cron="0 0 1-7 * 1", name="standard")
    @app.task
    def job() -> None: ...

    at = datetime(2024, 1, 7, 12, tzinfo=UTC)  # a Sunday

    async def body(pool: Any) -> list[list[tuple[str, str, datetime]]]:
        scheduler = PeriodicScheduler(app.registry, app.store, pool, grace=timedelta(seconds=10))
        passes = []
        for moment in [at, datetime(2024, 1, 8, 0, 0, 5, tzinfo=UTC),  # Monday the 8th: not in the first week
                       datetime(2024, 2, 1, 0, 0, 5, tzinfo=UTC),  # Thursday the 1st: not a Monday
                       datetime(2024, 2, 5, 0, 0, 5, tzinfo=UTC)]:  # the first Monday of February
            fires = await scheduler.tick(now=moment)
            passes.append(sorted((f.schedule, f.outcome, f.fire_time) for f in fires))
        return passes

    passes = run_with_pool(app, body)
    assert passes[0] == [("celery", "registered", at), ("standard", "registered", at)]
    assert passes[1] == [("standard", "enqueued", datetime(2024, 1, 8, tzinfo=UTC))]
    # The standard schedule also missed ticks in between (Mondays 15-29, then 2-4 February: the 1st-7th).
    assert passes[2] == [("standard", "enqueued", datetime(2024, 2, 1, tzinfo=UTC)),
                         ("standard", "skipped", datetime(2024, 1, 29, tzinfo=UTC))]
    assert passes[3] == [("celery", "enqueued", datetime(2024, 2, 5, tzinfo=UTC)),
                         ("standard", "enqueued", datetime(2024, 2, 5, tzinfo=UTC)),
                         ("standard", "skipped", datetime(2024, 2, 4, tzinfo=UTC))]
    # The crontab had no tick between 7 January and 5 February: nothing missed, nothing skipped.
    assert [(r[1], r[3]) for r in fires_of(conn, schema, "celery")] == [("registered", 0), ("enqueued", 0)]
    assert app.schedules["celery"].spec == "crontab(minute='0', hour='0', day_of_week='1', day_of_month='1-7') UTC"


def test_schedule_options_reach_the_job_rows(app: App, conn: psycopg.Connection[Any], schema: str) -> None:
    @app.periodic(every=timedelta(seconds=1), name="plain")
    @app.periodic(every=timedelta(seconds=1), name="urgent", queue="reports", priority=7,
                  expires=timedelta(minutes=5))
    @app.periodic(every=timedelta(seconds=1), name="in-seconds", expires=90)
    @app.task(queue="mail", priority=3)
    def send() -> None: ...

    async def body(pool: Any) -> None:
        scheduler = PeriodicScheduler(app.registry, app.store, pool, grace=timedelta(seconds=10))
        await scheduler.tick(now=T0 + timedelta(milliseconds=500))  # first sighting
        await scheduler.tick(now=T0 + timedelta(seconds=1, milliseconds=500))  # one tick of each

    run_with_pool(app, body)
    rows = conn.execute(
        f'SELECT f.schedule, j.task, j.queue, j.priority, extract(epoch FROM j.expires_at - j.created_at) '
        f'FROM "{schema}".periodic_fires AS f JOIN "{schema}".jobs AS j ON j.id = f.job_id ORDER BY 1').fetchall()
    assert rows == [("in-seconds", send.name, "mail", 3, 90),  # only expires given: the task's queue, priority
                    ("plain", send.name, "mail", 3, None),  # nothing given: the task's defaults, no expiry
                    ("urgent", send.name, "reports", 7, 300)]


def test_schedule_options_are_checked_as_apply_async_checks_them(app: App) -> None:
    @app.task
    def job() -> None: ...

    @app.task(queue="limited", concurrency=1)
    def limited() -> None: ...

    cases: list[tuple[dict[str, Any], Any]] = [
        ({"priority": 99999}, job), ({"priority": "high"}, job), ({"queue": "a,b"}, job), ({"queue": ""}, job),
        ({"expires": -5}, job), ({"expires": "soon"}, job), ({"queue": "other"}, limited)]
    for options, task in cases:
        with pytest.raises(ConfigurationError) as refused:
            task.apply_async(**options)
        with pytest.raises(ConfigurationError) as info:
            app.periodic(every=60, **options)(task)
        assert str(refused.value) in str(info.value), (options, str(info.value))
        assert str(info.value).startswith(f"@app.periodic on {task.name}: "), str(info.value)
    with pytest.raises(ConfigurationError, match=r"expires=datetime.*pass seconds or a timedelta"):
        app.periodic(every=60, expires=T0)(job)  # type: ignore[arg-type]
    assert app.schedules == {}


def test_the_apps_time_zone_is_the_default_of_cron_schedules(database_url: str, schema: str,
                                                            conn: psycopg.Connection[Any]) -> None:
    paris = App(database_url, schema=schema, timezone="Europe/Paris")
    try:
        assert paris.timezone == ZoneInfo("Europe/Paris")

        @paris.periodic(cron="0 9 * * *", name="string")
        @paris.periodic(cron=crontab(minute=0, hour=9), name="crontab")
        @paris.periodic(cron="0 9 * * *", timezone="UTC", name="own-zone")
        @paris.periodic(every=timedelta(hours=1), name="interval")
        @paris.task
        def job() -> None: ...

        winter, summer = datetime(2024, 1, 10, tzinfo=UTC), datetime(2024, 7, 10, tzinfo=UTC)
        for name in ("string", "crontab"):
            assert paris.schedules[name].timezone == ZoneInfo("Europe/Paris")
            assert paris.schedules[name].next_after(winter) == datetime(2024, 1, 10, 8, tzinfo=UTC)  # CET
            assert paris.schedules[name].next_after(summer) == datetime(2024, 7, 10, 7, tzinfo=UTC)  # CEST
        assert paris.schedules["own-zone"].next_after(winter) == datetime(2024, 1, 10, 9, tzinfo=UTC)
        assert paris.schedules["interval"].timezone == UTC  # intervals tick on instants
        assert paris.schedules["string"].spec == "cron '0 9 * * *' Europe/Paris"

        paris.migrate()

        async def body(pool: Any) -> list[Fire]:
            scheduler = PeriodicScheduler(paris.registry, paris.store, pool, grace=timedelta(seconds=10))
            await scheduler.tick(now=datetime(2024, 1, 10, 7, tzinfo=UTC))  # first sighting, 08:00 in Paris
            return await scheduler.tick(now=datetime(2024, 1, 10, 8, 0, 5, tzinfo=UTC))  # 09:00:05 in Paris

        fires = run_with_pool(paris, body)
        assert sorted((f.schedule, f.fire_time) for f in fires if f.outcome == "enqueued") == [
            ("crontab", datetime(2024, 1, 10, 8, tzinfo=UTC)), ("interval", datetime(2024, 1, 10, 8, tzinfo=UTC)),
            ("string", datetime(2024, 1, 10, 8, tzinfo=UTC))]
    finally:
        paris.close()
    assert App(database_url, schema=schema).timezone == UTC  # the default
    assert App(database_url, schema=schema, timezone=ZoneInfo("Asia/Tokyo")).timezone == ZoneInfo("Asia/Tokyo")
    for bad, fragment in [("Mars/Olympus", "'Mars/Olympus' is not a known IANA time zone"),
                          ("", "'' is not a known IANA time zone"), (5, "expected an IANA zone name")]:
        with pytest.raises(ConfigurationError) as info:
            App(database_url, schema=schema, timezone=bad)  # type: ignore[arg-type]
        assert str(info.value).startswith("App(timezone=...): timezone=") and fragment in str(info.value)


def test_pgtasks_periodic_lists_a_crontab_its_zone_and_its_job_options(app: App) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGTASKS_")}
    env.update(PYTHONPATH=str(ROOT), PGTASKS_DATABASE_URL=app.dsn, PGTASKS_SCHEMA=app.schema)

    def listing(*extra: str) -> str:
        done = subprocess.run([sys.executable, "-m", "pgtasks", "--app", "tests.apps.beat_app:app", "periodic", *extra],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    text = listing()
    assert ("first-monday\n  task:      beat.report\n"
            "  schedule:  crontab(minute='0', hour='0', day_of_week='1', day_of_month='1-7') Europe/Paris\n"
            "  jobs:      queue reports, priority 5, expires 3600 s after enqueue\n") in text, text
    assert ("  schedule:  cron '0 0 1-7 * 1' Europe/Paris\n  jobs:      queue default, priority 0\n") in text, text
    entries = {e["name"]: e for e in json.loads(listing("--json"))["schedules"]}
    assert {k: entries["first-monday"][k] for k in ("queue", "priority", "expires_in")} == {
        "queue": "reports", "priority": 5, "expires_in": 3600.0}
    assert entries["monday-or-first-week"]["expires_in"] is None
