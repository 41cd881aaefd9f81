"""Benchmark workloads shared by `pgtasks bench` and benchmarks/: enqueue, bulk enqueue, drain, idle latency.

Every workload runs in its own throwaway schema (pgtasks_bench_<hex>), dropped afterwards, and
runs the worker the way users deploy it: a `pgtasks worker` subprocess. Figures come from the
database, never from logs: completions are counted in `jobs`, and drain windows and start
latencies are read from the rows' own timestamps (one clock, the database's).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

from pgtasks.app import App
from pgtasks.client.task import Task
from pgtasks.core.errors import BenchmarkError
from pgtasks.storage.bench import BenchStore

SCHEMA_PREFIX = "pgtasks_bench_"
NOOP_TASK = "pgtasks.bench.noop"
ASYNC_NOOP_TASK = "pgtasks.bench.async_noop"
# The no-op with one argument: the enqueue workloads `with_args` call it as `.delay(n=i)` / `.s(n=i)`,
# so binding and validating real arguments is part of what they time (issue #16); the latency
# workload of benchmarks/compare.py has it stamp its start.
STAMP_TASK = "pgtasks.bench.stamp"
# The file the stamp task appends `<n> <time_ns>` to, as its first line (benchmarks/peers/peer_common.py
# StampFile reads it): start latency on the enqueuing client's clock, the same way for every library.
STAMP_FILE_ENV = "BENCH_STAMP_FILE"
# The `pgtasks worker` entry point, run with this interpreter (no reliance on a `pgtasks` script on PATH).
_CLI = ("-c", "from pgtasks.cli import main; main()")
_ENCODER = msgspec.json.Encoder()


def bench_app(database_url: str | None = None, *, schema: str | None = None) -> App:
    """An App holding the one task the benchmarks run: a no-op.

    The worker subprocess loads it with `--app pgtasks.ops.bench:bench_app`, taking the database and the
    schema from PGTASKS_DATABASE_URL and PGTASKS_SCHEMA.
    """
    app = App(database_url, schema=schema, application_name="pgtasks-bench")

    def noop() -> None:
        return None

    async def async_noop() -> None:
        return None

    async def stamp(n: int = 0) -> None:
        at = time.time_ns()  # first: the file's open is not part of the latency
        path = os.environ.get(STAMP_FILE_ENV)
        if path is None:
            return
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, f"{n} {at}\n".encode())
        finally:
            os.close(fd)

    app.task(name=NOOP_TASK)(noop)
    app.task(name=ASYNC_NOOP_TASK)(async_noop)
    app.task(name=STAMP_TASK)(stamp)
    return app


def noop_task(app: App, name: str = NOOP_TASK) -> Task[..., None]:
    """The bench app's no-op task (sync, run on a thread; or ASYNC_NOOP_TASK, run on the event loop;
    or STAMP_TASK, which takes n: int)."""
    task = app.tasks[name]
    if not isinstance(task, Task):
        raise BenchmarkError(f"{name} is not a task of the bench app")
    return task


@contextlib.contextmanager
def throwaway_app(database_url: str) -> Iterator[App]:
    """A bench App on a fresh, migrated schema that is dropped on exit (even after an error)."""
    schema = SCHEMA_PREFIX + uuid.uuid4().hex[:12]
    app = bench_app(database_url, schema=schema)
    try:
        app.migrate()
        yield app
    finally:
        app.close()
        drop_schema(app)


def drop_schema(app: App) -> None:
    """Drop a bench app's throwaway schema; refuses any schema not named pgtasks_bench_*."""
    if not app.schema.startswith(SCHEMA_PREFIX):
        raise BenchmarkError(f"refusing to drop schema {app.schema!r}: only throwaway {SCHEMA_PREFIX}* schemas are")
    with app.connect() as conn:
        BenchStore(app.schema).schema_drop(conn)


@dataclass(frozen=True)
class Result:
    """One measured workload: `rate` is jobs per second; `details` holds workload-specific figures."""

    workload: str
    jobs: int
    seconds: float
    rate: float
    library: str = "pgtasks"
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"library": self.library, "workload": self.workload, "jobs": self.jobs,
                "seconds": round(self.seconds, 4), "rate": round(self.rate, 1), **self.details}

    def to_json(self) -> str:
        return _ENCODER.encode(self.as_dict()).decode()


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 / max, interpolated as statistics.quantiles(method='inclusive') does."""
    if not values:
        raise BenchmarkError("no latencies were recorded: did any job complete?")
    cuts = [values[0]] * 99 if len(values) == 1 else statistics.quantiles(values, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49], 2), "p95_ms": round(cuts[94], 2), "p99_ms": round(cuts[98], 2),
            "max_ms": round(max(values), 2)}


# -- the worker subprocess -----------------------------------------------------------------------


class WorkerProcess:
    """A `pgtasks worker` subprocess on a bench app's schema; stderr (its log) goes to a temp file.

    `prefix` wraps the command, e.g. ("py-spy", "record", "-o", "out.svg", "--") to profile it.
    """

    def __init__(
        self,
        app: App,
        *,
        burst: bool = False,
        concurrency: int | None = None,
        listen: bool = True,
        poll_interval: float | None = None,
        extra_args: Sequence[str] = (),
        prefix: Sequence[str] = (),
        log_level: str = "INFO",
    ) -> None:
        args = ["worker", "--log-level", log_level]
        if burst:
            args.append("--burst")
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        if not listen:
            args.append("--no-listen")
        if poll_interval is not None:
            args += ["--poll-interval", str(poll_interval)]
        args += list(extra_args)
        self.command = [*prefix, sys.executable, *_CLI, "--app", "pgtasks.ops.bench:bench_app", *args]
        self.env = {**os.environ, "PGTASKS_DATABASE_URL": app.dsn, "PGTASKS_SCHEMA": app.schema}
        self.env.pop("PGTASKS_APP", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.started_at = 0.0
        self._cpu_before = 0.0
        self.cpu_seconds: float | None = None  # user + system CPU of the worker, once it has exited

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchmarkError("the worker process was not started")
        return self.proc.pid

    def start(self) -> WorkerProcess:
        self._log = tempfile.NamedTemporaryFile(prefix="pgtasks-bench-worker-", suffix=".log")  # noqa: SIM115
        self.started_at = time.perf_counter()
        self._cpu_before = _children_cpu()
        self.proc = subprocess.Popen(self.command, env=self.env, stdout=subprocess.DEVNULL, stderr=self._log)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        if self._log is None:
            return ""
        return "\n".join(Path(self._log.name).read_text(errors="replace").splitlines()[-lines:])

    def wait(self, timeout: float) -> float:
        """Wait for the worker to exit; returns its wall-clock lifetime. Raises unless it exited 0."""
        if self.proc is None:
            raise BenchmarkError("the worker process was not started")
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise BenchmarkError(
                f"the worker did not finish within {timeout}s; its log ends:\n{self.log_tail()}") from None
        elapsed = time.perf_counter() - self.started_at
        # Reaped children's CPU: only this worker ran as our child meanwhile (start-up included).
        self.cpu_seconds = _children_cpu() - self._cpu_before
        if code != 0:
            raise BenchmarkError(f"the worker exited with code {code}; its log ends:\n{self.log_tail()}")
        return elapsed

    def stop(self, timeout: float = 60.0) -> float:
        """SIGTERM (graceful shutdown), then wait for a clean exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._log is not None:
            self._log.close()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class BackendCpu:
    """Samples the CPU time of the database processes serving the bench app's connections.

    Works only when PostgreSQL runs on this host and /proc/<pid>/stat is readable (as root or the
    postgres user); otherwise `seconds` stays None. A backend's last sample before it exits
    counts, so the figure can miss up to one sampling interval of its work.
    """

    def __init__(self, app: App, interval: float = 0.05) -> None:
        self.app = app
        self.interval = interval
        self.seconds: float | None = None
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgtasks-bench-backend-cpu", daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def start(self) -> BackendCpu:
        self._thread.start()
        return self

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join()
        if self._last:
            self.seconds = sum(self._last.values())
        return self.seconds

    def _run(self) -> None:
        with self.app.connect() as conn:
            while not self._stop.is_set():
                for pid in BenchStore(self.app.schema).backend_pids(conn, self.app.application_name):
                    try:
                        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    # utime and stime are fields 14 and 15 of stat, 12 and 13 after the ")".
                    self._last[pid] = (int(fields[11]) + int(fields[12])) / self._tick
                self._stop.wait(self.interval)


def wait_until(condition: Callable[[], bool], *, timeout: float, worker: WorkerProcess | None = None,
               what: str = "condition", interval: float = 0.02) -> None:
    """Poll `condition` until true; fail if the worker died or `timeout` ran out first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if worker is not None and not worker.alive():
            raise BenchmarkError(f"the worker exited while waiting for {what}; its log ends:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            tail = f"; the worker's log ends:\n{worker.log_tail()}" if worker is not None else ""
            raise BenchmarkError(f"timed out after {timeout}s waiting for {what}{tail}")
        time.sleep(interval)


def completed(app: App) -> int:
    """Completed no-op jobs in the app's schema."""
    with app.connect() as conn:
        return BenchStore(app.schema).count_completed(conn, NOOP_TASK)


# -- workloads -------------------------------------------------------------------------------------


def enqueue_single(app: App, jobs: int, *, with_args: bool = False) -> Result:
    """(a) `jobs` calls of .delay(), each its own transaction on the app's pool; `with_args`:
    `.delay(n=i)` of STAMP_TASK, its argument bound and validated in every call."""
    task = noop_task(app, STAMP_TASK if with_args else NOOP_TASK)
    task.delay()  # opens the pool: connecting is not part of enqueueing
    started = time.perf_counter()
    if with_args:
        for i in range(jobs):
            task.delay(n=i)
    else:
        for _ in range(jobs):
            task.delay()
    seconds = time.perf_counter() - started
    return Result("enqueue_args" if with_args else "enqueue", jobs, seconds, jobs / seconds)


def enqueue_bulk(app: App, jobs: int, *, chunk: int = 5000, with_args: bool = False) -> Result:
    """(b) `jobs` jobs through delay_many(), `chunk` per call (each its own transaction).

    `with_args`: the public API with real arguments, as an application calls it: every call
    builds its signatures, `delay_many([task.s(n=i) for i in ...])` of STAMP_TASK, inside the timed
    window, and each one's argument is bound and validated. Without it the calls are `()` of the
    argument-less no-op, built before the clock starts.
    """
    task = noop_task(app, STAMP_TASK if with_args else NOOP_TASK)
    task.delay_many([()])  # opens the pool
    if with_args:
        started = time.perf_counter()
        for offset in range(0, jobs, chunk):
            task.delay_many([task.s(n=i) for i in range(offset, min(offset + chunk, jobs))])
        seconds = time.perf_counter() - started
        return Result("bulk_enqueue_args", jobs, seconds, jobs / seconds, details={"chunk": chunk})
    calls: list[tuple[Any, ...]] = [()] * jobs
    started = time.perf_counter()
    for offset in range(0, jobs, chunk):
        task.delay_many(calls[offset:offset + chunk])
    seconds = time.perf_counter() - started
    return Result("bulk_enqueue", jobs, seconds, jobs / seconds, details={"chunk": chunk})


def fill(app: App, jobs: int, *, chunk: int = 5000, task_name: str = NOOP_TASK) -> None:
    """Queue `jobs` no-op jobs (untimed setup for the drain workloads)."""
    task = noop_task(app, task_name)
    calls: list[tuple[Any, ...]] = [()] * jobs
    for offset in range(0, jobs, chunk):
        task.delay_many(calls[offset:offset + chunk])


def drain(
    app: App,
    jobs: int,
    *,
    concurrency: int | None = None,
    workload: str = "drain",
    extra_args: Sequence[str] = (),
    prefix: Sequence[str] = (),
    on_start: Callable[[WorkerProcess], None] | None = None,
    timeout: float = 1800.0,
    db_cpu: bool = False,
    task_name: str = NOOP_TASK,
) -> Result:
    """(c) Queue `jobs` no-op jobs, then run a burst worker until they are all done.

    The rate is jobs / (last outcome written - first claim), both from the database; the
    worker's start-up (imports, connecting) is outside that window and reported separately.
    CPU per job is reported for the worker process (start-up included) and, with `db_cpu`, for
    the database processes serving it (see BackendCpu): figures a busy shared machine disturbs
    far less than the wall-clock rate.
    """
    fill(app, jobs, task_name=task_name)
    backends = BackendCpu(app).start() if db_cpu else None
    with WorkerProcess(app, burst=True, concurrency=concurrency, extra_args=extra_args, prefix=prefix) as worker:
        if on_start is not None:
            on_start(worker)
        try:
            wall = worker.wait(timeout)
        finally:
            db_seconds = backends.stop() if backends is not None else None
    with app.connect() as conn:
        window = BenchStore(app.schema).drain_window(conn, task_name)
    done, first, last = window["completed"], window["first_claim"], window["last_outcome"]
    if done != jobs or first is None or last is None:
        raise BenchmarkError(f"{workload}: {done} of {jobs} jobs completed ({window['total']} in the table)")
    seconds = max((last - first).total_seconds(), 1e-6)
    details: dict[str, Any] = {"concurrency": concurrency if concurrency is not None else "default",
                               "task": "async" if task_name == ASYNC_NOOP_TASK else "sync",
                               "wall_seconds": round(wall, 3), "fetches": window["fetches"],
                               "outcome_writes": window["outcome_writes"]}
    if worker.cpu_seconds is not None:
        details["worker_cpu_us_per_job"] = round(worker.cpu_seconds / jobs * 1e6, 1)
    if db_seconds is not None:
        details["db_cpu_us_per_job"] = round(db_seconds / jobs * 1e6, 1)
    return Result(workload, jobs, seconds, jobs / seconds, details=details)


def idle_latency(
    app: App,
    jobs: int = 200,
    *,
    interval: float = 0.02,
    listen: bool = True,
    poll_interval: float | None = None,
    timeout: float = 120.0,
) -> Result:
    """(d) An idle worker; `jobs` jobs enqueued `interval` apart; enqueue-to-start percentiles.

    Start latency is jobs.attempted_at - jobs.created_at: now() of the fetch that claimed the
    job minus now() of the insert, so it covers the insert's commit, the NOTIFY (or the poll),
    the wakeup and the fetch. One warm-up job (excluded) proves the worker is up first.
    """
    task = noop_task(app)
    with WorkerProcess(app, listen=listen, poll_interval=poll_interval) as worker:
        task.delay()
        wait_until(lambda: completed(app) >= 1, timeout=60.0, worker=worker, what="the warm-up job")
        started = time.perf_counter()
        for i in range(jobs):
            task.delay()
            pause = started + (i + 1) * interval - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        seconds = time.perf_counter() - started
        wait_until(lambda: completed(app) >= jobs + 1, timeout=timeout, worker=worker,
                   what=f"{jobs} jobs to complete")
        worker.stop()
    with app.connect() as conn:
        latencies = BenchStore(app.schema).start_latencies(conn, NOOP_TASK)[1:]
    details: dict[str, Any] = {"listen": listen, "interval_ms": round(interval * 1000, 1), **percentiles(latencies)}
    if poll_interval is not None:
        details["poll_interval_s"] = poll_interval
    name = "idle_latency" if listen else "idle_latency_no_listen"
    return Result(name, jobs, seconds, jobs / seconds, details=details)


# -- the suite `pgtasks bench` runs ----------------------------------------------------------------


@dataclass(frozen=True)
class SuiteConfig:
    """Sizes of the `pgtasks bench` workloads; `jobs` sizes bulk enqueue and drain."""

    jobs: int = 50_000
    enqueue_jobs: int | None = None  # default: jobs // 10, at least 1
    latency_jobs: int = 200
    latency_interval: float = 0.02
    concurrency: int | None = None  # None: the worker's default
    chunk: int = 5000
    no_listen: bool = False  # also measure idle latency with --no-listen (bounded by the poll interval)
    workloads: tuple[str, ...] = ("enqueue", "bulk", "drain", "latency")


WORKLOADS = ("enqueue", "bulk", "drain", "latency")


def run_suite(database_url: str, config: SuiteConfig, report: Callable[[Result], None] = lambda r: None,
              ) -> list[Result]:
    """Run the configured workloads, each in its own throwaway schema; `report` sees each result."""
    results: list[Result] = []

    def record(result: Result) -> None:
        results.append(result)
        report(result)

    enqueue_jobs = config.enqueue_jobs or max(1, config.jobs // 10)
    if "enqueue" in config.workloads:
        with throwaway_app(database_url) as app:
            record(enqueue_single(app, enqueue_jobs))
    if "bulk" in config.workloads:
        with throwaway_app(database_url) as app:
            record(enqueue_bulk(app, config.jobs, chunk=config.chunk))
    if "drain" in config.workloads:
        with throwaway_app(database_url) as app:
            record(drain(app, config.jobs, concurrency=config.concurrency))
    if "latency" in config.workloads:
        with throwaway_app(database_url) as app:
            record(idle_latency(app, config.latency_jobs, interval=config.latency_interval))
        if config.no_listen:
            with throwaway_app(database_url) as app:
                record(idle_latency(app, config.latency_jobs, interval=config.latency_interval, listen=False))
    return results


def format_table(results: Sequence[Result]) -> str:
    """A plain-text table of results, one row per workload."""
    header = ("workload", "jobs", "seconds", "jobs/s", "notes")
    rows = [header]
    for r in results:
        notes = " ".join(f"{k}={v}" for k, v in r.details.items())
        rate = "-" if "p50_ms" in r.details else f"{r.rate:,.0f}"  # latency runs are paced, not timed
        rows.append((r.workload, f"{r.jobs:,}", f"{r.seconds:.3f}", rate, notes))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for i, row in enumerate(rows):
        cells = [cell.ljust(w) if j == 0 else cell.rjust(w)
                 for j, (cell, w) in enumerate(zip(row, widths, strict=False))]
        lines.append("  ".join([*cells, row[-1]]))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 5)
    return "\n".join(lines)
