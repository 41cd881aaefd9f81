"""What a trigger on jobs costs the worker's outcome write of plain jobs.

--trigger final (default): the completion NOTIFY trigger (migration 0003, jobs_notify_final).
--trigger workflow: the two workflow triggers (migration 0005), whose WHEN clauses every plain
job's state change evaluates.

Claims N jobs, then writes their outcomes with Store.job_set_outcome_many in batches of B, once with
the trigger on and once with it off, alternating rounds so both see the same table and cache state.
Prints microseconds per job for each batch size. Run: python benchmarks/completion_notify.py
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

from bench_common import base_parser
from psycopg import AsyncConnection

from pgtasks import App
from pgtasks.core.models import JobState, Outcome
from pgtasks.ops.bench import drop_schema
from pgtasks.storage.bench import BenchStore
from pgtasks.storage.connections import connection_kwargs


async def round_once(app: App, jobs: int, batch: int, enabled: bool, trigger: str) -> float:
    """Seconds per job to write `jobs` completions in batches of `batch`."""
    with app.connect() as conn:
        switch = BenchStore(app.schema).notify_final if trigger == "final" else BenchStore(app.schema).workflow_triggers
        switch(conn, enabled=enabled)
    task = app.tasks["bench.noop"]
    app.enqueue_many([task.s() for _ in range(jobs)])
    aconn = await AsyncConnection.connect(app.dsn, **connection_kwargs("bench-notify"))
    async with aconn:
        claimed = await app.store.ajob_fetch_available(aconn, queues=["default"], limit=jobs, worker_id="bench")
        outcomes = [Outcome(j.id, j.claims, JobState.COMPLETED, result=b"1") for j in claimed]
        started = time.perf_counter()
        for i in range(0, len(outcomes), batch):
            written = await app.store.ajob_set_outcome_many(aconn, outcomes[i:i + batch])
            assert len(written) == len(outcomes[i:i + batch])
        elapsed = time.perf_counter() - started
    return elapsed / len(outcomes)


async def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trigger", choices=["final", "workflow"], default="final")
    args = parser.parse_args()
    app = App(args.database_url, schema=f"pgtasks_bench_{uuid.uuid4().hex[:8]}")
    app.migrate()

    @app.task(name="bench.noop")
    def noop() -> None: ...

    try:
        for batch in (1, 100, 1000):
            jobs = min(args.jobs, 500) if batch == 1 else args.jobs
            on: list[float] = []
            off: list[float] = []
            for round_no in range(args.rounds):
                # A then B, then B then A: neither side always runs on the other's warmed caches.
                for enabled in ((False, True) if round_no % 2 == 0 else (True, False)):
                    (on if enabled else off).append(await round_once(app, jobs, batch, enabled, args.trigger))
            mon, moff = statistics.median(on) * 1e6, statistics.median(off) * 1e6
            print(f"batch={batch:<5} jobs={jobs:<5} trigger off {moff:8.1f} us/job   on {mon:8.1f} us/job   "
                  f"cost {mon - moff:+7.1f} us/job ({(mon / moff - 1) * 100:+.1f}%)")
    finally:
        drop_schema(app)
        app.close()


if __name__ == "__main__":
    asyncio.run(main())
