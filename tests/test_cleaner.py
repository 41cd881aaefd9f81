"""The cleaner: deletes only rows past their retention, in small batches, and keeps what None keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
import pytest

from pgtasks import App, ConfigurationError
from pgtasks.leadership.cleaner import Cleaner, CleanReport, Retention
from tests.helpers import run_with_pool

T = TypeVar("T")
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def add_job(conn: psycopg.Connection[Any], schema: str, state: str, age: timedelta | None) -> int:
    """A job row in `state`, finalized `age` before NOW (None: not finalized)."""
    row = conn.execute(
        f'INSERT INTO "{schema}".jobs (task, queue, state, finalized_at) '
        f'VALUES (%s, %s, %s::"{schema}".job_state, %s) RETURNING id',
        ("t", "default", state, None if age is None else NOW - age)).fetchone()
    assert row is not None
    return int(row[0])


def remaining(conn: psycopg.Connection[Any], schema: str) -> set[int]:
    return {int(r[0]) for r in conn.execute(f'SELECT id FROM "{schema}".jobs').fetchall()}


def test_deletes_only_finished_jobs_past_retention_in_batches(app: App, conn: psycopg.Connection[Any],
                                                              schema: str) -> None:
    old_completed = [add_job(conn, schema, "completed", timedelta(hours=25)) for _ in range(5)]
    young_completed = add_job(conn, schema, "completed", timedelta(hours=23))
    old_cancelled = add_job(conn, schema, "cancelled", timedelta(hours=25))
    discarded_2d = add_job(conn, schema, "discarded", timedelta(days=2))
    discarded_8d = add_job(conn, schema, "discarded", timedelta(days=8))
    unfinished = [add_job(conn, schema, state, None) for state in ("available", "running", "retryable", "scheduled")]

    async def body(pool: Any) -> tuple[CleanReport, CleanReport]:
        cleaner = Cleaner(pool, app.store, batch_size=2)
        first = await cleaner.clean(now=NOW)
        second = await cleaner.clean(now=NOW)
        return first, second

    first, second = run_with_pool(app, body)
    assert first.jobs == {"completed": 5, "cancelled": 1, "discarded": 1}
    # 5 old completed rows at 2 per statement: batches of 2, 2, 1; then one each for the rest,
    # plus one (empty) pass over workflows, one over fire records, one over worker rows and one
    # over key buckets.
    assert first.batches == 3 + 1 + 1 + 1 + 1 + 1 + 1
    assert second.total == 0
    assert remaining(conn, schema) == {young_completed, discarded_2d, *unfinished}
    assert not set(old_completed) & remaining(conn, schema)
    assert old_cancelled not in remaining(conn, schema) and discarded_8d not in remaining(conn, schema)


def test_none_keeps_forever_and_custom_retention_applies(app: App, conn: psycopg.Connection[Any],
                                                         schema: str) -> None:
    completed = add_job(conn, schema, "completed", timedelta(days=365))
    cancelled = add_job(conn, schema, "cancelled", timedelta(minutes=10))
    discarded = add_job(conn, schema, "discarded", timedelta(minutes=10))

    async def body(pool: Any) -> CleanReport:
        retention = Retention(completed=None, cancelled=timedelta(minutes=5), discarded=timedelta(hours=1))
        return await Cleaner(pool, app.store, retention=retention).clean(now=NOW)

    report = run_with_pool(app, body)
    assert report.jobs == {"cancelled": 1, "discarded": 0}
    assert remaining(conn, schema) == {completed, discarded}
    assert cancelled not in remaining(conn, schema)
    with pytest.raises(ConfigurationError, match="completed=-1"):
        Retention(completed=-1)  # type: ignore[arg-type]


def test_prunes_old_fire_records_but_keeps_each_schedules_newest_and_dead_workers(
    app: App, conn: psycopg.Connection[Any], schema: str,
) -> None:
    fires = f'INSERT INTO "{schema}".periodic_fires (schedule, fire_time, outcome) VALUES (%s, %s, %s)'
    for days in (30, 20, 10, 1):
        conn.execute(fires, ("daily", NOW - timedelta(days=days), "enqueued"))
    conn.execute(fires, ("retired", NOW - timedelta(days=40), "enqueued"))  # only record: the cursor stays
    # overlap=False: a run enqueued 30 days ago and still unfinished, every tick since skipped. The
    # newest enqueued record stays (the overlap check reads it), the older skipped ones go.
    for days, outcome in ((31, "enqueued"), (30, "enqueued"), (20, "skipped"), (10, "skipped"), (1, "skipped")):
        conn.execute(fires, ("exclusive", NOW - timedelta(days=days), outcome))
    conn.execute(fires, ("never-ran", NOW - timedelta(days=30), "registered"))
    conn.execute(fires, ("never-ran", NOW - timedelta(days=20), "skipped"))
    workers = (f'INSERT INTO "{schema}".workers (worker_id, hostname, pid, queues, concurrency, last_seen_at) '
               "VALUES (%s, 'h', 1, '{default}', 1, %s)")
    conn.execute(workers, ("dead", NOW - timedelta(hours=2)))
    conn.execute(workers, ("alive", NOW - timedelta(seconds=3)))

    async def body(pool: Any) -> CleanReport:
        return await Cleaner(pool, app.store, batch_size=1).clean(now=NOW)

    report = run_with_pool(app, body)
    assert (report.periodic_fires, report.dead_workers) == (3 + 3 + 1, 1)
    left = conn.execute(f'SELECT schedule, fire_time FROM "{schema}".periodic_fires ORDER BY 1, 2').fetchall()
    assert left == [("daily", NOW - timedelta(days=1)),
                    ("exclusive", NOW - timedelta(days=30)), ("exclusive", NOW - timedelta(days=1)),
                    ("never-ran", NOW - timedelta(days=20)),
                    ("retired", NOW - timedelta(days=40))]
    assert conn.execute(f'SELECT worker_id FROM "{schema}".workers').fetchall() == [("alive",)]


def test_a_backlog_is_worked_off_in_short_pauses_then_the_interval_returns(
        app: App, conn: psycopg.Connection[Any], schema: str) -> None:
    # Ten rows, two per statement, two statements a pass: a pass that stops at its cap leaves
    # rows behind, and waiting the full interval for each pass would cap the deletion rate.
    for _ in range(10):
        add_job(conn, schema, "completed", timedelta(hours=25))

    async def body(pool: Any) -> list[tuple[int, bool, float]]:
        cleaner = Cleaner(pool, app.store, batch_size=2, max_batches=2, interval=60.0)
        passes = []
        for _ in range(4):
            await cleaner.run_once(now=NOW)
            passes.append((len(remaining(conn, schema)), cleaner.interval < 60.0, cleaner.interval))
        return passes

    passes = run_with_pool(app, body)
    assert [left for left, _, _ in passes] == [6, 2, 0, 0]
    # Rows were left after the first two passes (each stopped at its cap with full batches): the
    # next came after a short pause. The third deleted the last two and then found none, so the
    # configured interval came back.
    assert [short for _, short, _ in passes] == [True, True, False, False]
    assert passes[-1][2] == 60.0
