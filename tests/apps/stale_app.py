"""A task module whose job waits for an advisory lock the test holds, for the SIGSTOP stale test.

The worker runs it as `pgtasks --app tests.apps.stale_app:app worker --queues held`;
PGTASKS_DATABASE_URL and PGTASKS_SCHEMA come from the test's environment. The job blocks in
PostgreSQL (pg_locks shows it waiting) until the test releases the lock: no sleep, no polling.
"""

from __future__ import annotations

import pgtasks

app = pgtasks.App()

QUEUE = "held"


@app.task(name="stale.held", queue=QUEUE)
def held(lock_key: int) -> str:
    with app.transaction() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
    return "stale"
