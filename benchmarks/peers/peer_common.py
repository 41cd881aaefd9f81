"""Plumbing shared by the peer benchmarks (run in the peers venv, so stdlib + psycopg only).

Each peer script runs the same workloads as pgtasks.ops.bench, measured the same way: single and
bulk enqueue timed on the client; the drain rate watched from outside the library (DrainClock: a
separate connection counting the jobs not finished yet), next to the peer's own database
timestamps; start latency from the enqueuing client's clock to the task's first line (StampFile);
completions counted in the database; workers run as subprocesses with INFO logging to a temp file.
This module is shared with benchmarks/compare.py, which runs pgtasks with the same two clocks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Protocol, Self
from urllib.parse import quote

import psycopg

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def with_search_path(dsn: str, schema: str) -> str:
    """`dsn` with search_path set to `schema` (the peers put their tables in the search_path schema)."""
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options={quote(f'-csearch_path={schema}')}"


@contextlib.contextmanager
def throwaway_schema(dsn: str, prefix: str) -> Iterator[str]:
    """A fresh schema, dropped on exit."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 / max, interpolated like pgtasks.ops.bench.percentiles."""
    if not values:
        raise RuntimeError("no latencies were recorded")
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
    return {"p50_ms": round(cuts[49], 2), "p95_ms": round(cuts[94], 2), "p99_ms": round(cuts[98], 2),
            "max_ms": round(max(values), 2)}


def emit(library: str, workload: str, jobs: int, seconds: float, **details: Any) -> None:
    """Print one JSON result line, shaped like pgtasks.ops.bench.Result.as_dict()."""
    rate = jobs / seconds if seconds > 0 else 0.0
    print(json.dumps({"library": library, "workload": workload, "jobs": jobs, "seconds": round(seconds, 4),
                      "rate": round(rate, 1), **details}), flush=True)


class WorkerProcess:
    """This script's `worker` subcommand as a subprocess; stderr (its log) goes to a temp file."""

    def __init__(self, script: str, dsn: str, args: Sequence[str]) -> None:
        self.command = [sys.executable, script, "--database-url", dsn, "worker", *args]
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.started_at = 0.0
        # A subclass may run another command (self.command) with more environment, elsewhere.
        self.env: dict[str, str] = {**os.environ}
        self.cwd: Path | None = None
        self.stdout_to_log = False  # True for a worker that logs to stdout too: both go to the log

    def __enter__(self) -> Self:
        self._log = tempfile.NamedTemporaryFile(prefix="peer-bench-worker-", suffix=".log")
        self.started_at = time.perf_counter()
        stdout: IO[bytes] | int = self._log if self.stdout_to_log else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command, stdout=stdout, stderr=self._log, env=self.env, cwd=self.cwd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._log is not None:
            self._log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        if self._log is None:
            return ""
        return "\n".join(Path(self._log.name).read_text(errors="replace").splitlines()[-lines:])

    def wait(self, timeout: float) -> float:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise RuntimeError(f"worker did not finish within {timeout}s:\n{self.log_tail()}") from None
        if code != 0:
            raise RuntimeError(f"worker exited with {code}:\n{self.log_tail()}")
        return time.perf_counter() - self.started_at

    def stop(self, timeout: float = 60.0) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class DrainClock:
    """Times a drain from outside the library: a thread polls `unfinished()` (its own connection),
    the number of jobs not finished yet, every `interval` seconds.

    The drain runs from the first completion (the first poll that sees fewer than `jobs`
    unfinished) to the last (the first poll that sees none). Each end is taken as the midpoint
    between that poll and the one before it, so the poll interval costs no bias, only a
    resolution of +-interval/2 at each end.
    """

    def __init__(self, unfinished: Callable[[], int], jobs: int, interval: float = 0.05) -> None:
        self.unfinished = unfinished
        self.jobs = jobs
        self.interval = interval
        self.first: float | None = None
        self.last: float | None = None
        self.polls = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drain-clock", daemon=True)

    def start(self) -> DrainClock:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            previous = time.perf_counter()
            while not self._stop.is_set():
                left = self.unfinished()
                now = time.perf_counter()
                self.polls += 1
                if self.first is None and left < self.jobs:
                    self.first = (previous + now) / 2
                if left == 0:
                    self.last = (previous + now) / 2
                    return
                previous = now
                self._stop.wait(self.interval)
        except Exception as exc:  # noqa: BLE001 - re-raised by seconds(): a failed poll is no result
            self.error = exc

    def seconds(self, timeout: float = 60.0) -> float:
        """The drain's duration; waits up to `timeout` for the last poll, raises if it never came."""
        self._thread.join(timeout)
        self._stop.set()
        if self.error is not None:
            raise RuntimeError(f"the drain clock failed: {self.error!r}") from self.error
        if self.first is None or self.last is None:
            raise RuntimeError(f"the drain clock saw no end to the drain within {timeout}s "
                               f"(last poll: {self.polls} polls)")
        return max(self.last - self.first, 1e-6)

    def abort(self) -> None:
        self._stop.set()
        self._thread.join()


class StampFile:
    """Start latency on the enqueuing client's clock: the task's first line appends `<n> <time_ns>`
    to this file; the client notes time.time_ns() just before enqueueing job n.

    Both ends read the same host's wall clock, so this needs client and worker on one machine.
    """

    ENV = "BENCH_STAMP_FILE"

    def __init__(self) -> None:
        handle, name = tempfile.mkstemp(prefix="bench-stamps-", suffix=".txt")
        os.close(handle)
        self.path = Path(name)
        self.sent: dict[int, int] = {}

    def mark(self, n: int) -> None:
        self.sent[n] = time.time_ns()

    def stamped(self) -> int:
        return len(self.path.read_text().splitlines())

    def latencies_ms(self) -> list[float]:
        started = {}
        for line in self.path.read_text().splitlines():
            n, at = line.split()
            started[int(n)] = int(at)
        missing = [n for n in self.sent if n not in started]
        if missing:
            raise RuntimeError(f"{len(missing)} of {len(self.sent)} jobs left no stamp (first: {missing[:5]})")
        return [(started[n] - sent) / 1e6 for n, sent in sorted(self.sent.items())]

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


def write_stamp(n: int) -> None:
    """The stamping task's first line (the worker side of StampFile), for every library alike."""
    path = os.environ.get(StampFile.ENV)
    if path is None:
        return
    at = time.time_ns()  # first: the file's open is not part of the latency
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, f"{n} {at}\n".encode())
    finally:
        os.close(fd)


def paced_enqueue(enqueue: Callable[[], object], jobs: int, interval: float) -> float:
    """Call `enqueue` `jobs` times, `interval` seconds apart; return the seconds it took."""
    started = time.perf_counter()
    for i in range(jobs):
        enqueue()
        pause = started + (i + 1) * interval - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    return time.perf_counter() - started


def paced_run(worker: WorkerProcess, enqueue: Callable[[], object], completed: Callable[[], int], *,
              jobs: int, interval: float, warm_up: Callable[[], object] | None = None) -> float:
    """The idle-latency workload against a running worker: one warm-up job (run to completion,
    then left out of the figures), then `jobs` jobs `interval` seconds apart; waits until all
    ran and returns the seconds the paced enqueueing took."""
    (warm_up or enqueue)()
    wait_until(lambda: completed() >= 1, timeout=60, worker=worker, what="the warm-up job")
    seconds = paced_enqueue(enqueue, jobs, interval)
    wait_until(lambda: completed() >= jobs + 1, timeout=120, worker=worker, what="all jobs")
    return seconds


def emit_idle_latency(library: str, jobs: int, seconds: float, interval: float, latencies_ms: Sequence[float],
                      **details: Any) -> None:
    """The idle-latency result line: percentiles of each job's start - enqueue, in milliseconds."""
    if len(latencies_ms) != jobs:
        raise RuntimeError(f"{library} latency: {len(latencies_ms)} of {jobs} jobs recorded a latency")
    emit(library, "idle_latency", jobs, seconds, **details, interval_ms=round(interval * 1000, 1),
         **percentiles(latencies_ms))


class Watched(Protocol):
    """A worker process being waited on: WorkerProcess, or a peer's own wrapper."""

    def alive(self) -> bool: ...

    def log_tail(self, lines: int = 20) -> str: ...


def wait_until(condition: Callable[[], bool], *, timeout: float, worker: Watched, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if not worker.alive():
            raise RuntimeError(f"worker exited while waiting for {what}:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}:\n{worker.log_tail()}")
        time.sleep(0.02)


def scalar(dsn: str, query: str, params: dict[str, Any] | None = None) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query.encode(), params).fetchone()
    return None if row is None else row[0]


def run_workload(args: argparse.Namespace, target: str, *, enqueue: Callable[[str, int], None],
                 bulk: Callable[[str, int, int], None], drain: Callable[[str, int, int | None], None],
                 latency: Callable[[str, int, float], None],
                 worker: Callable[[str, argparse.Namespace], None]) -> None:
    """Run the subcommand parser() parsed with its options; `target` is the DSN (or broker URL)."""
    if args.command == "enqueue":
        enqueue(target, args.jobs)
    elif args.command == "bulk":
        bulk(target, args.jobs, args.chunk)
    elif args.command == "drain":
        drain(target, args.jobs, args.concurrency)
    elif args.command == "latency":
        latency(target, args.jobs, args.interval)
    else:
        worker(target, args)


def parser(description: str) -> argparse.ArgumentParser:
    """The peer scripts' command line: one subcommand per workload, plus the worker they spawn."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--database-url", default=os.environ.get("PGTASKS_DATABASE_URL", DEFAULT_DSN))
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("enqueue", help="enqueue N jobs one per transaction")
    e.add_argument("--jobs", type=int, default=5000)
    b = sub.add_parser("bulk", help="bulk enqueue N jobs")
    b.add_argument("--jobs", type=int, default=50_000)
    b.add_argument("--chunk", type=int, default=5000)
    d = sub.add_parser("drain", help="drain N queued no-op jobs")
    d.add_argument("--jobs", type=int, default=50_000)
    d.add_argument("--concurrency", type=int, default=None, help="default: the peer's default")
    d.add_argument("--task", choices=("async", "sync"), default="async",
                   help="an async no-op (run on the event loop) or a sync one (run on a thread)")
    lat = sub.add_parser("latency", help="idle worker: start latency of jobs enqueued --interval apart")
    lat.add_argument("--jobs", type=int, default=200)
    lat.add_argument("--interval", type=float, default=0.02)
    w = sub.add_parser("worker", help="(internal) the worker subprocess")
    w.add_argument("--schema", required=True)
    w.add_argument("--concurrency", type=int, default=None)
    w.add_argument("--burst", action="store_true")
    w.add_argument("--log-level", default="INFO")
    return p


def delete_run_keys(client: Any, run: str) -> None:
    """Delete one Celery run's Redis keys (`client`: a redis.Redis), and its members of kombu's
    shared binding sets."""
    for key in client.scan_iter(match="*", count=1000):
        name = key.decode(errors="replace")
        if run in name:
            client.delete(key)
        elif name.startswith("_kombu.binding") and client.type(key) == b"set":
            members = [m for m in client.smembers(key) if run.encode() in m]
            if members:
                client.srem(key, *members)
    # kombu's deadlines of expiring binding tables (the worker's pidbox): drop the entries whose
    # tables are gone now; a live worker's tables still exist, so another run's stay.
    deadlines = "_kombu.binding_deadlines"
    for exchange in client.zrange(deadlines, 0, -1):
        name = exchange.decode(errors="replace")
        if not client.exists(f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}"):
            client.zrem(deadlines, exchange)
