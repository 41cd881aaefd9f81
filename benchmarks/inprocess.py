"""In-process figures for A/B runs of two checkouts: a drain by a burst worker, and one-job enqueues.

Unlike `pgtasks bench` (a worker subprocess, figures from the jobs table), this runs the worker in
this process, so its CPU per job is this process's CPU time: steadier than a wall-clock rate on a
shared machine. Run it with each checkout's interpreter in turn, alternating:

    for i in 1 2 3 4 5; do A/.venv/bin/python benchmarks/inprocess.py drain; \
                           B/.venv/bin/python benchmarks/inprocess.py drain; done

`enqueue-python` replaces the insert with a stub, timing only the Python side of `.delay()`.
Each run prints one line: workload, jobs/s, and CPU µs per job (drain) or µs per call.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time

from pgtasks.ops import bench


def drain(database_url: str, jobs: int) -> str:
    with bench.throwaway_app(database_url) as app:
        bench.fill(app, jobs)
        worker = app.worker(burst=True)
        cpu, wall = time.process_time(), time.perf_counter()
        asyncio.run(worker.arun())
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return f"drain {jobs / wall:.0f} jobs/s {cpu / jobs * 1e6:.1f} cpu_us_per_job"


def enqueue(database_url: str, jobs: int) -> str:
    with bench.throwaway_app(database_url) as app:
        task = bench.noop_task(app)
        task.delay()  # opens the pool: connecting is not part of enqueueing
        started = time.perf_counter()
        for _ in range(jobs):
            task.delay()
        return f"enqueue {jobs / (time.perf_counter() - started):.0f} jobs/s"


def enqueue_python(database_url: str, jobs: int) -> str:
    with bench.throwaway_app(database_url) as app:
        task = bench.noop_task(app)
        task.delay()
        app.store.job_insert = lambda conn, row: 1  # type: ignore[method-assign] # time no round trip
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(jobs):
                task.delay()
            best = min(best, (time.perf_counter() - started) / jobs)
        return f"enqueue-python {1 / best:.0f} calls/s {best * 1e6:.2f} us_per_call"


WORKLOADS = {"drain": (drain, 20_000), "enqueue": (enqueue, 3_000), "enqueue-python": (enqueue_python, 20_000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--jobs", type=int, default=None, help="jobs (or calls) per run")
    parser.add_argument("--database-url", default=os.environ.get("PGTASKS_DATABASE_URL",
                                                                 "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    logging.getLogger("pgtasks").setLevel(logging.WARNING)
    run, default_jobs = WORKLOADS[args.workload]
    print(run(args.database_url, args.jobs or default_jobs))


if __name__ == "__main__":
    main()
