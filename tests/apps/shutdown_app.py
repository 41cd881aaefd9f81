"""A task module for tests/test_shutdown.py, run as `pgtasks --app tests.apps.shutdown_app:app worker`.

`shutdown.stuck` is a sync task that announces itself on stdout and then blocks its thread on an
Event nobody sets: it cannot finish, and no Python code can interrupt it. PGTASKS_DATABASE_URL and
PGTASKS_SCHEMA come from the test's environment.
"""

from __future__ import annotations

import threading

import pgtasks

app = pgtasks.App()

STARTED = "shutdown-test: stuck job started"
never_set = threading.Event()


@app.task(name="shutdown.stuck")
def stuck(label: str) -> str:
    job = pgtasks.current_job()
    print(f"{STARTED} job_id={job.id} thread={threading.current_thread().name}", flush=True)
    never_set.wait()
    return label
