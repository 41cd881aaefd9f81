"""A task module with a schedule every second, for the leadership and periodic acceptance tests.

Workers run it as `pgtasks --app tests.apps.periodic_app:app worker` in subprocesses;
PGTASKS_DATABASE_URL and PGTASKS_SCHEMA come from the test's environment. Each run records
itself in the test-made table `test_runs`, so tests can count real executions, not just jobs.
"""

from __future__ import annotations

from datetime import timedelta

from psycopg import sql

import pgtasks

app = pgtasks.App()


def record_run(label: str) -> None:
    job = pgtasks.current_job()
    with app.transaction() as conn:
        conn.execute(sql.SQL("INSERT INTO {}.test_runs (job_id, attempt, worker_id, label) VALUES (%s, %s, %s, %s)")
                     .format(sql.Identifier(app.schema)), (job.id, job.attempt, job.worker_id, label))


@app.periodic(every=timedelta(seconds=1), name="every-second")
@app.task(name="periodic.tick")
def tick() -> None:
    record_run("tick")


@app.periodic(cron="0 9 * * 1-5", timezone="Europe/Paris", name="weekday-mornings", catch_up="skip")
@app.task(name="periodic.report")
def report(kind: str = "daily") -> None:
    record_run(kind)
