"""pgqueuer on the pgtasks benchmark workloads (run with the peers venv's python; see benchmarks/compare.py).

pgqueuer is run as its own docs run it at its best: the worker is what `pgq run
pgqueuer_app:create_pgqueuer` runs (pgqueuer.run() on uvloop; pgqueuer_app.main() says why not the
CLI itself) over an asyncpg connection, at --log-level INFO like the
pgtasks worker, with pgqueuer's default batch size (10); at concurrency 10 it gets
--max-concurrent-tasks 10 and --batch-size 5 (pgqueuer requires max >= 2 x batch). The producer
is pgqueuer's Queries on asyncpg (`--driver psycopg` measures its sync psycopg driver instead).
Every job carries a payload (its number), as every pgtasks job carries an argument.

Drain: timed from outside the library (DrainClock: jobs left in pgqueuer's queue table, which a
completion deletes from), next to pgqueuer's own pgqueuer_log timestamps ('picked' and
'successful' rows, now() of their transactions). Start latency: the enqueuing client's clock to
the task's first line (StampFile).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import psycopg
from peer_common import (
    DrainClock,
    StampFile,
    WorkerProcess,
    emit,
    emit_idle_latency,
    parser,
    scalar,
    throwaway_schema,
    wait_until,
)
from pgqueuer_app import NOOP, STAMP, SYNC_NOOP

LIBRARY = "pgqueuer"
HERE = Path(__file__).resolve().parent


def _use_schema(schema: str) -> None:
    # pgqueuer reads its object names from the environment; a channel per schema keeps concurrent
    # runs from waking each other.
    os.environ["PGQUEUER_SCHEMA"] = schema
    os.environ["PGQUEUER_CHANNEL"] = f"ch_{schema}"


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    import uvloop

    return uvloop.run(coro)


async def _queries(dsn: str, driver: str) -> tuple[Any, Any]:
    """pgqueuer's async Queries over an asyncpg connection (or psycopg's async one); (queries, conn)."""
    from pgqueuer.adapters.persistence.queries import Queries

    if driver == "asyncpg":
        import asyncpg
        from pgqueuer.db import AsyncpgDriver

        conn = await asyncpg.connect(dsn)
        return Queries(AsyncpgDriver(conn)), conn
    from pgqueuer.adapters.drivers.psycopg import PsycopgDriver

    pconn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    return Queries(PsycopgDriver(pconn)), pconn


def _install(dsn: str) -> None:
    async def run() -> None:
        queries, conn = await _queries(dsn, "asyncpg")
        try:
            await queries.install(create_schema=True)
        finally:
            await conn.close()

    _run(run())


def _payload(n: int) -> bytes:
    return str(n).encode()


def _fill(dsn: str, jobs: int, entrypoint: str, chunk: int = 5000) -> None:
    async def run() -> None:
        queries, conn = await _queries(dsn, "asyncpg")
        try:
            for offset in range(0, jobs, chunk):
                n = min(chunk, jobs - offset)
                await queries.enqueue([entrypoint] * n, [_payload(offset + i) for i in range(n)], [0] * n)
        finally:
            await conn.close()

    _run(run())


class PgqWorker(WorkerProcess):
    """pgqueuer's worker (pgqueuer_app.main(), i.e. `pgq run`) as a subprocess on one schema; its
    log (stdout and stderr: pgqueuer logs INFO to stdout) goes to a temp file."""

    def __init__(self, dsn: str, schema: str, *, concurrency: int | None, burst: bool,
                 log_level: str = "INFO", stamps: StampFile | None = None, batch_size: int = 10) -> None:
        super().__init__(str(HERE / "pgqueuer_app.py"), dsn, [])
        # pgqueuer_app.main() is `pgq run pgqueuer_app:create_pgqueuer` (see its docstring for why
        # the CLI itself cannot start here), at pgq run's default log level, INFO.
        if log_level.upper() != "INFO":
            raise SystemExit(f"the pgqueuer worker runs at pgq run's default log level, INFO, not {log_level}")
        if concurrency is not None:  # pgqueuer requires max_concurrent_tasks >= 2 x batch_size
            batch_size = max(1, min(batch_size, concurrency // 2))
        self.batch_size = batch_size
        self.command = [sys.executable, str(HERE / "pgqueuer_app.py"), "--mode", "drain" if burst else "continuous",
                        "--batch-size", str(batch_size)]
        if concurrency is not None:
            self.command += ["--max-concurrent-tasks", str(concurrency)]
        self.env.update({"BENCH_PGQUEUER_DSN": dsn, "PGQUEUER_SCHEMA": schema,
                         "PGQUEUER_CHANNEL": f"ch_{schema}", "PYTHONPATH": str(HERE)})
        if stamps is not None:
            self.env[StampFile.ENV] = str(stamps.path)
        self.cwd = HERE
        self.stdout_to_log = True


def cmd_enqueue(dsn: str, jobs: int, driver: str) -> None:
    with throwaway_schema(dsn, "bench_pgq") as schema:
        _use_schema(schema)
        _install(dsn)

        async def run() -> float:
            queries, conn = await _queries(dsn, driver)
            try:
                await queries.enqueue(NOOP, _payload(0))  # warm up: connection caches
                started = time.perf_counter()
                for n in range(jobs):
                    await queries.enqueue(NOOP, _payload(n))
                return time.perf_counter() - started
            finally:
                await conn.close()

        emit(LIBRARY, "enqueue", jobs, _run(run()), driver=driver)


def cmd_bulk(dsn: str, jobs: int, chunk: int, driver: str) -> None:
    with throwaway_schema(dsn, "bench_pgq") as schema:
        _use_schema(schema)
        _install(dsn)

        async def run() -> float:
            queries, conn = await _queries(dsn, driver)
            try:
                await queries.enqueue([NOOP], [_payload(0)], [0])
                started = time.perf_counter()
                for offset in range(0, jobs, chunk):
                    n = min(chunk, jobs - offset)
                    await queries.enqueue([NOOP] * n, [_payload(offset + i) for i in range(n)], [0] * n)
                return time.perf_counter() - started
            finally:
                await conn.close()

        emit(LIBRARY, "bulk_enqueue", jobs, _run(run()), chunk=chunk, driver=driver)


def _unfinished(dsn: str, schema: str) -> Callable[[], int]:
    conn = psycopg.connect(dsn, autocommit=True)
    query = f'SELECT count(*) FROM "{schema}".pgqueuer'.encode()

    def count() -> int:
        row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0

    return count


def cmd_drain(dsn: str, jobs: int, concurrency: int | None, task: str, batch_size: int) -> None:
    entrypoint = SYNC_NOOP if task == "sync" else NOOP
    with throwaway_schema(dsn, "bench_pgq") as schema:
        _use_schema(schema)
        _install(dsn)
        _fill(dsn, jobs, entrypoint)
        clock = DrainClock(_unfinished(dsn, schema), jobs).start()
        try:
            with PgqWorker(dsn, schema, concurrency=concurrency, burst=True, batch_size=batch_size) as w:
                wall = w.wait(1800)
                batch_size = w.batch_size
            outside = clock.seconds()
        finally:
            clock.abort()
        log = f'"{schema}".pgqueuer_log'
        done = scalar(dsn, f"SELECT count(*) FROM {log} WHERE status = 'successful'")
        if done != jobs:
            raise RuntimeError(f"pgqueuer drain: {done} of {jobs} completed")
        own = scalar(dsn, f"SELECT extract(epoch FROM max(created) FILTER (WHERE status = 'successful')"
                          f" - min(created) FILTER (WHERE status = 'picked')) FROM {log}")
        emit(LIBRARY, "drain", jobs, outside, concurrency=concurrency or "default", task=task,
             own_timestamps_seconds=round(float(own), 4), own_timestamps_rate=round(jobs / float(own), 1),
             wall_seconds=round(wall, 3), clock="outside", batch_size=batch_size)


def cmd_latency(dsn: str, jobs: int, interval: float, driver: str) -> None:
    with throwaway_schema(dsn, "bench_pgq") as schema:
        _use_schema(schema)
        _install(dsn)
        stamps = StampFile()
        try:
            with PgqWorker(dsn, schema, concurrency=None, burst=False, stamps=stamps) as w:
                async def run() -> float:
                    queries, conn = await _queries(dsn, driver)
                    try:
                        await queries.enqueue(STAMP, _payload(-1))  # warm-up job, left out
                        await asyncio.to_thread(wait_until, lambda: stamps.stamped() >= 1, timeout=60,
                                                worker=w, what="the warm-up job")
                        started = time.perf_counter()
                        for n in range(jobs):
                            stamps.mark(n)
                            await queries.enqueue(STAMP, _payload(n))
                            pause = started + (n + 1) * interval - time.perf_counter()
                            if pause > 0:
                                await asyncio.sleep(pause)
                        seconds = time.perf_counter() - started
                        await asyncio.to_thread(wait_until, lambda: stamps.stamped() >= jobs + 1, timeout=120,
                                                worker=w, what="all jobs")
                        return seconds
                    finally:
                        await conn.close()

                seconds = _run(run())
                w.stop()
            emit_idle_latency(LIBRARY, jobs, seconds, interval, stamps.latencies_ms(), listen=True,
                              clock="client to task", driver=driver)
        finally:
            stamps.close()


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__ or LIBRARY)
    p.add_argument("--driver", choices=("asyncpg", "psycopg"), default="asyncpg",
                   help="the producer's driver (the worker always runs on asyncpg under `pgq run`)")
    p.add_argument("--batch-size", type=int, default=10,
                   help="the worker's --batch-size (pgq run's default: 10), capped at concurrency / 2")
    args = p.parse_args(argv)
    dsn = args.database_url
    if args.command == "enqueue":
        cmd_enqueue(dsn, args.jobs, args.driver)
    elif args.command == "bulk":
        cmd_bulk(dsn, args.jobs, args.chunk, args.driver)
    elif args.command == "drain":
        cmd_drain(dsn, args.jobs, args.concurrency, args.task, args.batch_size)
    elif args.command == "latency":
        cmd_latency(dsn, args.jobs, args.interval, args.driver)
    else:
        raise SystemExit("pgqueuer's worker is `pgq run pgqueuer_app:create_pgqueuer` (see PgqWorker)")


if __name__ == "__main__":
    main()
