"""Tasks for the tests of `pgtasks worker --processes N` (tests/test_processes.py).

Workers run it as `pgtasks --app tests.apps.processes_app:app worker`; PGTASKS_DATABASE_URL and
PGTASKS_SCHEMA come from the test's environment. `proc.record` adds a row to `test_runs` per run
(the process's pid as its label) and returns that pid; `proc.die` ends its process mid-job.
"""

from __future__ import annotations

import asyncio
import os
import time

from psycopg import sql

import pgtasks

app = pgtasks.App()


@app.task(name="proc.record")
def record(seconds: float = 0.0) -> int:
    time.sleep(seconds)
    job = pgtasks.current_job()
    with app.transaction() as conn:
        conn.execute(sql.SQL("INSERT INTO {}.test_runs (job_id, attempt, worker_id, label) VALUES (%s, %s, %s, %s)")
                     .format(sql.Identifier(app.schema)), (job.id, job.attempt, job.worker_id, str(os.getpid())))
    return os.getpid()


@app.task(name="proc.asleep")
async def asleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@app.task(name="proc.die")
def die() -> None:
    os._exit(1)  # the whole process ends at once, as after a segfault: no cleanup, the job stays running
