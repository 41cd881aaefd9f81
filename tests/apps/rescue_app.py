"""A task module whose job sleeps on its first attempt only, for the kill-a-worker rescue test.

Workers run it as `pgtasks --app tests.apps.rescue_app:app worker`; PGTASKS_DATABASE_URL and
PGTASKS_SCHEMA come from the test's environment. Each finished run adds a row to `test_runs`.
"""

from __future__ import annotations

import time

from psycopg import sql

import pgtasks

app = pgtasks.App()


@app.task(name="rescue.long")
def long(seconds: float) -> None:
    job = pgtasks.current_job()
    if job.attempt == 1:
        time.sleep(seconds)
    with app.transaction() as conn:
        conn.execute(sql.SQL("INSERT INTO {}.test_runs (job_id, attempt, worker_id, label) VALUES (%s, %s, %s, %s)")
                     .format(sql.Identifier(app.schema)), (job.id, job.attempt, job.worker_id, "long"))
