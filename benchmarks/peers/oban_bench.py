"""oban (oban-py) on the pgtasks benchmark workloads (see benchmarks/compare.py).

oban needs Python 3.12+, so compare.py runs this script in a venv of its own
(`<peers venv>-py3.12`). Measured like pgtasks.ops.bench, from oban_jobs' own timestamps:
- enqueue: oban.enqueue() N times, each its own transaction, timed on the client. oban's client is
  asyncio only, so the loop runs in asyncio.run (pgtasks' .delay() is sync).
- bulk: oban.enqueue_many(), one call (one transaction) per chunk. In the open-source package that
  is one INSERT statement per job inside the transaction (multi-row inserts are in Oban Pro).
- drain: N queued no-op jobs, then `oban start` (the library's CLI, run in-process by this script's
  worker subcommand so that it knows the no-op worker) as a subprocess. oban has no burst mode: this
  script watches oban_jobs until no job is left to run, then stops the worker with SIGTERM. The rate
  is N / (max(completed_at) - min(attempted_at)): now() of the last ack minus now() of the first
  fetch; completions counted in oban_jobs. The queue limit is oban's default, 10, unless
  --concurrency is given (`oban start` needs one per queue).
- latency: an idle `oban start`; jobs enqueued --interval apart; attempted_at - inserted_at (now()
  of the fetch minus now() of the insert). Inserts wake the queue through oban's LISTEN/NOTIFY.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
from peer_common import (
    WorkerProcess,
    emit,
    emit_idle_latency,
    parser,
    run_workload,
    throwaway_schema,
    wait_until,
    with_search_path,
)

LIBRARY = "oban"
QUEUE = "bench"
DEFAULT_LIMIT = 10  # oban's own default queue limit
UNFINISHED = "('available', 'scheduled', 'executing', 'retryable')"


class Noop:
    """The no-op job; made an oban worker by noop_worker()."""

    async def process(self, job: Any) -> None:
        return None


@cache
def noop_worker() -> Any:
    # Registered under this module's name (__main__ in the client and in the worker alike).
    from oban import worker

    return worker(queue=QUEUE)(Noop)


@asynccontextmanager
async def _client(sdsn: str, schema: str) -> AsyncIterator[Any]:
    """A client-mode Oban (no queues) on `schema` with its own pool, as oban's docs set one up."""
    from oban import Oban

    pool = await Oban.create_pool(sdsn)
    oban = Oban(pool=pool, prefix=schema)
    await oban.start()
    try:
        yield oban
    finally:
        await oban.stop()
        await pool.close()


@contextmanager
def _installed_schema(dsn: str) -> Iterator[tuple[str, str]]:
    """A throwaway schema with oban's tables in it; yields (schema, a DSN whose search_path is it)."""
    from oban.schema import install_sql

    with throwaway_schema(dsn, "bench_obn") as schema:
        sdsn = with_search_path(dsn, schema)
        # search_path is the schema too: install.sql creates a helper function without the prefix.
        with psycopg.connect(sdsn, autocommit=True) as conn:
            conn.execute(install_sql(prefix=schema).encode())
        yield schema, sdsn


async def _fill(oban: Any, jobs: int, chunk: int = 5000) -> None:
    noop = noop_worker()
    for offset in range(0, jobs, chunk):
        await oban.enqueue_many([noop.new() for _ in range(min(chunk, jobs - offset))])


class Progress:
    """Job states in oban_jobs, read over one connection (polling opens no new ones)."""

    def __init__(self, sdsn: str, schema: str) -> None:
        self.conn = psycopg.connect(sdsn, autocommit=True)
        self.table = f'"{schema}".oban_jobs'

    def close(self) -> None:
        self.conn.close()

    def completed(self) -> int:
        row = self.conn.execute(f"SELECT count(*) FROM {self.table} WHERE state = 'completed'".encode()).fetchone()
        return int(row[0]) if row else 0

    def unfinished(self) -> bool:
        """True while a job is left to run; raises on a job that failed."""
        failed = self.conn.execute(
            f"SELECT errors FROM {self.table} WHERE state IN ('retryable', 'discarded') LIMIT 1".encode()).fetchone()
        if failed is not None:
            raise RuntimeError(f"oban: a job failed: {failed[0]}")
        row = self.conn.execute(
            f"SELECT EXISTS (SELECT 1 FROM {self.table} WHERE state IN {UNFINISHED})".encode()).fetchone()
        return bool(row and row[0])



def _worker_args(schema: str, concurrency: int | None) -> list[str]:
    args = ["--schema", schema]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    return args


def cmd_enqueue(dsn: str, jobs: int) -> None:
    with _installed_schema(dsn) as (schema, sdsn):

        async def run() -> float:
            async with _client(sdsn, schema) as oban:
                noop = noop_worker()
                await oban.enqueue(noop.new())  # opens the pool's connection
                started = time.perf_counter()
                for _ in range(jobs):
                    await oban.enqueue(noop.new())
                return time.perf_counter() - started

        emit(LIBRARY, "enqueue", jobs, asyncio.run(run()))


def cmd_bulk(dsn: str, jobs: int, chunk: int) -> None:
    with _installed_schema(dsn) as (schema, sdsn):

        async def run() -> float:
            async with _client(sdsn, schema) as oban:
                await oban.enqueue_many([noop_worker().new()])
                started = time.perf_counter()
                await _fill(oban, jobs, chunk)
                return time.perf_counter() - started

        emit(LIBRARY, "bulk_enqueue", jobs, asyncio.run(run()), chunk=chunk)


def cmd_drain(dsn: str, jobs: int, concurrency: int | None) -> None:
    with _installed_schema(dsn) as (schema, sdsn):

        async def fill() -> None:
            async with _client(sdsn, schema) as oban:
                await _fill(oban, jobs)

        asyncio.run(fill())
        progress = Progress(sdsn, schema)
        try:
            with WorkerProcess(__file__, dsn, _worker_args(schema, concurrency)) as w:
                wait_until(lambda: not progress.unfinished(), timeout=1800, worker=w, what="the drain")
                wall = time.perf_counter() - w.started_at
                w.stop()
            done = progress.completed()
        finally:
            progress.close()
        if done != jobs:
            raise RuntimeError(f"oban drain: {done} of {jobs} completed")
        table = f'"{schema}".oban_jobs'
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(f"SELECT extract(epoch FROM max(completed_at) - min(attempted_at)) "
                               f"FROM {table}".encode()).fetchone()
        seconds = float(row[0]) if row and row[0] is not None else 0.0
        emit(LIBRARY, "drain", jobs, max(seconds, 1e-6), concurrency=concurrency or "default",
             limit=concurrency or DEFAULT_LIMIT, wall_seconds=round(wall, 3))


def cmd_latency(dsn: str, jobs: int, interval: float) -> None:
    with _installed_schema(dsn) as (schema, sdsn):
        progress = Progress(sdsn, schema)
        try:
            with WorkerProcess(__file__, dsn, _worker_args(schema, None)) as w:

                def completed(count: int) -> Callable[[], bool]:
                    return lambda: progress.completed() >= count

                async def run() -> float:
                    async with _client(sdsn, schema) as oban:
                        noop = noop_worker()
                        await oban.enqueue(noop.new())
                        await asyncio.to_thread(wait_until, completed(1), timeout=60, worker=w, what="the warm-up job")
                        started = time.perf_counter()
                        for i in range(jobs):
                            await oban.enqueue(noop.new())
                            pause = started + (i + 1) * interval - time.perf_counter()
                            if pause > 0:
                                await asyncio.sleep(pause)
                        seconds = time.perf_counter() - started
                        await asyncio.to_thread(wait_until, completed(jobs + 1), timeout=120, worker=w,
                                                what="the paced jobs")
                        return seconds

                seconds = asyncio.run(run())
                w.stop()
        finally:
            progress.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(f'SELECT extract(epoch FROM attempted_at - inserted_at) * 1000 '
                                f'FROM "{schema}".oban_jobs ORDER BY id'.encode()).fetchall()
        emit_idle_latency(LIBRARY, jobs, seconds, interval, [float(r[0]) for r in rows][1:], listen=True)


def cmd_worker(dsn: str, schema: str, concurrency: int | None) -> None:
    from oban.cli import main as oban_cli

    noop_worker()
    limit = concurrency or DEFAULT_LIMIT
    # `oban start` scans --cron-paths for cron workers: point it at this folder, not the whole cwd.
    oban_cli(["start", "--dsn", with_search_path(dsn, schema), "--prefix", schema,
              "--queues", f"{QUEUE}:{limit}", "--cron-paths", str(Path(__file__).resolve().parent)],
             prog_name="oban")


def main(argv: list[str] | None = None) -> None:
    if sys.version_info < (3, 12):
        raise SystemExit("oban needs Python 3.12 or newer (benchmarks/compare.py makes such a venv)")
    args = parser(__doc__ or LIBRARY).parse_args(argv)
    run_workload(args, args.database_url, enqueue=cmd_enqueue, bulk=cmd_bulk, drain=cmd_drain, latency=cmd_latency,
                 worker=lambda dsn, a: cmd_worker(dsn, a.schema, a.concurrency))


if __name__ == "__main__":
    main()
