"""CPU-bound drain: `pgtasks worker --processes 1` (A) against `--processes 2` (B).

Each job runs about 5 ms of pure Python (a loop calibrated in this process before the rounds),
so one process is bound by the GIL and only more processes use more cores. Each round queues
--jobs jobs on a fresh schema and runs a burst worker until they are done; the rate is jobs
divided by the window from the first claim to the last outcome written (both from the jobs
table), so process start-up is outside it (first_claims_spread_s: how much later than the first
child the last one claimed its first job). Rounds alternate A, B, A, B, ... because the machine is
shared and its speed drifts; the summary line has the median of each and the ratio B/A. Beside
the rate, each run reports the CPU per job of the workers and of the database sessions serving
them, others_cpu_s: the CPU the machine spent on anything else meanwhile, and steal_s: the time
the hypervisor gave this virtual machine's CPUs to others (both from /proc/stat, so Linux only;
the database's CPU from /proc/<pid>/stat, so a local server).

The worker loads this module's cpu_app(): `--app processes_cpu:cpu_app`, with this directory on
PYTHONPATH.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench_common import base_parser, throwaway_app
from psycopg import sql

from pgtasks import App
from pgtasks.client.task import Task
from pgtasks.core.errors import BenchmarkError
from pgtasks.ops import bench
from pgtasks.storage.bench import BenchStore

HERE = Path(__file__).resolve().parent
SPIN = "cpubench.spin"
# The workers' connections are told apart by name from this script's (the fill, the figures), so
# that the database CPU counted is the workers' only.
WORKER_NAME, CLIENT_NAME = "pgtasks-cpubench", "pgtasks-cpubench-client"


def spin(iterations: int) -> int:
    """Pure Python work, holding the GIL throughout."""
    total = 0
    for i in range(iterations):
        total = (total + i * i) % 1_000_003
    return total


def cpu_app(database_url: str | None = None, *, schema: str | None = None,
            application_name: str = WORKER_NAME) -> App:
    """The App of the benchmark's one task: the same code in the worker and in this script."""
    app = App(database_url, schema=schema, application_name=application_name)
    app.task(name=SPIN)(spin)
    return app


def calibrate(target_ms: float) -> int:
    """Iterations of spin() that take about `target_ms` of CPU here (median of 5 timings; CPU time,
    so that another session's load while calibrating does not inflate the work)."""
    iterations = 20_000
    timings = []
    for _ in range(5):
        started = time.process_time()
        spin(iterations)
        timings.append(time.process_time() - started)
    return max(1, round(iterations * target_ms / 1000 / statistics.median(timings)))


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, stolen): CPU seconds all CPUs of this machine spent busy so far (user, nice, system,
    irq, softirq), and the time a hypervisor ran something else on them (steal: a virtual
    machine's host is shared too)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


class Worker(bench.WorkerProcess):
    """A burst `pgtasks worker --processes N` on this module's App."""

    def __init__(self, app: App, *, processes: int, concurrency: int) -> None:
        super().__init__(app, burst=True)
        self.command = [sys.executable, "-m", "pgtasks", "--app", "processes_cpu:cpu_app", "worker", "--burst",
                        "--log-level", "warning", "--processes", str(processes), "--concurrency", str(concurrency)]
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), self.env.get("PYTHONPATH")) if p)


@contextlib.contextmanager
def throwaway(dsn: str) -> Iterator[App]:
    with throwaway_app(cpu_app, dsn, application_name=CLIENT_NAME) as app:
        yield app


def drain(dsn: str, *, jobs: int, iterations: int, processes: int, concurrency: int) -> tuple[float, dict[str, object]]:
    """(jobs/s, the figures of the run) of one burst drain of `jobs` jobs."""
    with throwaway(dsn) as app:
        task = app.tasks[SPIN]
        if not isinstance(task, Task):
            raise BenchmarkError(f"{SPIN} is not a task of the CPU bench app")
        for offset in range(0, jobs, 5000):
            task.delay_many([(iterations,)] * min(5000, jobs - offset))
        sampled = cpu_app(dsn, schema=app.schema)  # BackendCpu counts the sessions named as its App's
        backends = bench.BackendCpu(sampled).start()
        busy_before, stolen_before = machine_cpu_seconds()
        with Worker(app, processes=processes, concurrency=concurrency) as worker:
            wall = worker.wait(timeout=1800)
        busy_after, stolen_after = machine_cpu_seconds()
        busy, stolen = busy_after - busy_before, stolen_after - stolen_before
        db_cpu = backends.stop()
        sampled.close()
        with app.connect() as conn:
            window = BenchStore(app.schema).drain_window(conn, SPIN)
            # When each process claimed its first job: B's window opens with the first child, and
            # the others' later start-up counts against it (a burst's cost, not a steady state's).
            firsts = conn.execute(sql.SQL("SELECT extract(epoch FROM max(f) - min(f))::float8 FROM (SELECT "
                                          "min(attempted_at) AS f FROM {} GROUP BY attempted_by) s")
                                  .format(sql.Identifier(app.schema, "jobs"))).fetchone()
    if window["completed"] != jobs or window["first_claim"] is None or window["last_outcome"] is None:
        raise BenchmarkError(f"{window['completed']} of {jobs} jobs completed")
    seconds = max((window["last_outcome"] - window["first_claim"]).total_seconds(), 1e-6)
    cpu = worker.cpu_seconds
    # CPU the machine spent while the worker ran on anything but the workers and the database
    # sessions serving them: other sessions' load on a shared machine (and PostgreSQL's background
    # processes, and this script), which slows B, needing both cores, more than A.
    others = busy - (cpu or 0.0) - (db_cpu or 0.0) if db_cpu is not None else None
    figures: dict[str, object] = {
        "workload": "cpu_drain", "processes": processes, "concurrency": concurrency, "jobs": jobs,
        "seconds": round(seconds, 3), "rate": round(jobs / seconds, 1), "wall_seconds": round(wall, 2),
        "fetches": window["fetches"], "outcome_writes": window["outcome_writes"],
        "worker_cpu_us_per_job": round(cpu / jobs * 1e6, 1) if cpu is not None else None,
        "db_cpu_us_per_job": round(db_cpu / jobs * 1e6, 1) if db_cpu is not None else None,
        "others_cpu_s": round(others, 2) if others is not None else None, "steal_s": round(stolen, 2),
        "first_claims_spread_s": round(float(firsts[0]), 3) if firsts and firsts[0] is not None else None}
    return jobs / seconds, figures


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--job-ms", type=float, default=5.0, help="pure Python work per job, in milliseconds")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each of A and B, alternated")
    parser.add_argument("--concurrency", type=int, default=2, help="--concurrency of each worker process")
    parser.add_argument("--processes", type=int, default=2, help="the processes of B (A runs 1)")
    args = parser.parse_args(argv)
    iterations = calibrate(args.job_ms)
    print(json.dumps({"calibrated_iterations": iterations, "job_ms": args.job_ms, "cpus": os.cpu_count()}),
          flush=True)
    rates: dict[int, list[float]] = {1: [], args.processes: []}
    for _ in range(args.repeat * args.rounds):
        for processes in (1, args.processes):
            rate, result = drain(args.database_url, jobs=args.jobs, iterations=iterations, processes=processes,
                                 concurrency=args.concurrency)
            rates[processes].append(round(rate, 1))
            print(json.dumps(result), flush=True)
    a, b = statistics.median(rates[1]), statistics.median(rates[args.processes])
    print(json.dumps({"summary": "cpu_drain", "a_processes": 1, "b_processes": args.processes,
                      "a_rates": rates[1], "b_rates": rates[args.processes], "a_median": round(a, 1),
                      "b_median": round(b, 1), "ratio_b_over_a": round(b / a, 2),
                      "round_ratios": [round(y / x, 2) for x, y in zip(rates[1], rates[args.processes], strict=True)]}),
          flush=True)


if __name__ == "__main__":
    main()
