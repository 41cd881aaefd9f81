"""The tasks of the workflow chaos and big-chord tests (tests/test_workflows_chaos.py).

Workers run it as `pgtasks --app tests.apps.workflow_chaos_app:app worker`; PGTASKS_DATABASE_URL
and PGTASKS_SCHEMA come from the test's environment. The test registers the same tasks on its
own App with register(), so the signatures it builds are validated against these functions.

Each run of the callback adds a row to the test-made table `callback_runs`, in its own
transaction, so the test counts executions of the callback, not just its jobs.
"""

from __future__ import annotations

import time

from psycopg import sql
from psycopg.types.json import Jsonb

import pgtasks
from pgtasks.client.task import Task

MEMBER = "wfchaos.member"
COLLECT = "wfchaos.collect"


def register(app: pgtasks.App) -> tuple[Task[..., int], Task[..., int]]:
    """Register the member and the callback on `app`; returns them."""

    # Rescues spend attempts: a member killed several times must not run out of them and fail
    # the chord, which is not what the chaos test is about.
    @app.task(name=MEMBER, max_attempts=50)
    def member(index: int, sleep_ms: float = 0.0) -> int:
        if sleep_ms:
            time.sleep(sleep_ms / 1000)
        return index

    @app.task(name=COLLECT, max_attempts=50)
    def collect(values: list[int]) -> int:
        job = pgtasks.current_job()
        with app.transaction() as conn:
            conn.execute(sql.SQL("INSERT INTO {}.callback_runs (job_id, attempt, worker_id, result_values) "
                                 "VALUES (%s, %s, %s, %s)").format(sql.Identifier(app.schema)),
                         (job.id, job.attempt, job.worker_id, Jsonb(values)))
        return len(values)

    return member, collect


app = pgtasks.App()
register(app)
