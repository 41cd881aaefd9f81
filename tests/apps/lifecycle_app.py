"""A task module for tests/test_retries_hooks.py, run as `pgtasks --app tests.apps.lifecycle_app:app worker`.

Its worker_ready and worker_shutdown hooks, and its one task, print a line each on stdout, so the
test can tell in which order they ran in the worker process, and how often. The task says whether
the connection the ready hook "opened" was there when it ran. PGTASKS_DATABASE_URL and
PGTASKS_SCHEMA come from the test's environment.
"""

from __future__ import annotations

import os

import pgtasks

app = pgtasks.App()

resources: dict[str, str] = {}


@app.worker_ready
def open_resources(event: pgtasks.WorkerEvent) -> None:
    resources["client"] = f"client-of-{event.worker_id}"
    print(f"lifecycle: ready pid={os.getpid()} queues={','.join(event.queues)} "
          f"concurrency={event.concurrency}", flush=True)


@app.worker_shutdown
async def close_resources(event: pgtasks.WorkerEvent) -> None:
    resources.pop("client")
    print(f"lifecycle: shutdown pid={os.getpid()}", flush=True)


@app.task(name="lifecycle.use")
def use() -> str:
    print(f"lifecycle: task pid={os.getpid()} client={resources.get('client', 'missing')}", flush=True)
    return resources["client"]
