"""pgqueuer on the pgtasks benchmark workloads (run with the peers venv's python; see benchmarks/compare.py).

Same measurements as pgtasks.ops.bench: enqueue timed on the client with pgqueuer's sync driver (like
pgtasks' sync .delay()); drain and start latency from pgqueuer_log timestamps ('picked' and
'successful' rows are written with now() of their transactions), completions counted there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import Any

import psycopg
from peer_common import (
    WorkerProcess,
    emit,
    emit_idle_latency,
    paced_run,
    parser,
    run_workload,
    scalar,
    throwaway_schema,
)

LIBRARY = "pgqueuer"
ENTRYPOINT = "noop"


def _use_schema(schema: str) -> None:
    # pgqueuer reads its object names from the environment; a channel per schema keeps concurrent
    # runs from waking each other.
    os.environ["PGQUEUER_SCHEMA"] = schema
    os.environ["PGQUEUER_CHANNEL"] = f"ch_{schema}"


def _install(dsn: str) -> None:
    from pgqueuer.adapters.drivers.psycopg import PsycopgDriver
    from pgqueuer.adapters.persistence.queries import Queries

    async def run() -> None:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        async with conn:
            await Queries(PsycopgDriver(conn)).install(create_schema=True)

    asyncio.run(run())


def _sync_queries(conn: psycopg.Connection[Any]) -> Any:
    from pgqueuer.adapters.drivers.psycopg import SyncPsycopgDriver
    from pgqueuer.adapters.persistence.queries import SyncQueries

    return SyncQueries(SyncPsycopgDriver(conn))


def _fill(dsn: str, jobs: int, chunk: int = 5000) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        queries = _sync_queries(conn)
        for offset in range(0, jobs, chunk):
            n = min(chunk, jobs - offset)
            queries.enqueue([ENTRYPOINT] * n, [None] * n, [0] * n)


def _worker_args(schema: str, concurrency: int | None, burst: bool) -> list[str]:
    args = ["--schema", schema]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    if burst:
        args.append("--burst")
    return args


def cmd_enqueue(dsn: str, jobs: int) -> None:
    with throwaway_schema(dsn, "bench_pgq") as schema:
        _use_schema(schema)
        _install(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            queries = _sync_queries(conn)
            queries.enqueue(ENTRYPOINT, None)
            started = time.perf_counter()
            for _ in range(jobs):
                queries.enqueue(ENTRYPOINT, None)
            seconds = time.perf_counter() - started
        emit(LIBRARY, "enqueue", jobs, seconds)


def cmd_bulk(dsn: str, jobs: int, chunk: int) -> None:
    with throwaway_schema(dsn, "bench_pgq") as schema:
        _use_schema(schema)
        _install(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            queries = _sync_queries(conn)
            queries.enqueue([ENTRYPOINT], [None], [0])
            started = time.perf_counter()
            for offset in range(0, jobs, chunk):
                n = min(chunk, jobs - offset)
                queries.enqueue([ENTRYPOINT] * n, [None] * n, [0] * n)
            seconds = time.perf_counter() - started
        emit(LIBRARY, "bulk_enqueue", jobs, seconds, chunk=chunk)


def cmd_drain(dsn: str, jobs: int, concurrency: int | None) -> None:
    with throwaway_schema(dsn, "bench_pgq") as schema:
        _use_schema(schema)
        _install(dsn)
        _fill(dsn, jobs)
        with WorkerProcess(__file__, dsn, [*_worker_args(schema, concurrency, True)]) as w:
            wall = w.wait(1800)
        log = f'"{schema}".pgqueuer_log'
        done = scalar(dsn, f"SELECT count(*) FROM {log} WHERE status = 'successful'")
        if done != jobs:
            raise RuntimeError(f"pgqueuer drain: {done} of {jobs} completed")
        seconds = scalar(dsn, f"SELECT extract(epoch FROM max(created) FILTER (WHERE status = 'successful')"
                              f" - min(created) FILTER (WHERE status = 'picked')) FROM {log}")
        emit(LIBRARY, "drain", jobs, float(seconds), concurrency=concurrency or "default",
             wall_seconds=round(wall, 3))


def cmd_latency(dsn: str, jobs: int, interval: float) -> None:
    with throwaway_schema(dsn, "bench_pgq") as schema:
        _use_schema(schema)
        _install(dsn)
        log = f'"{schema}".pgqueuer_log'

        def done() -> int:
            return int(scalar(dsn, f"SELECT count(*) FROM {log} WHERE status = 'successful'"))

        with WorkerProcess(__file__, dsn, [*_worker_args(schema, None, False)]) as w, \
                psycopg.connect(dsn, autocommit=True) as conn:
            queries = _sync_queries(conn)
            seconds = paced_run(w, lambda: queries.enqueue(ENTRYPOINT, None), done, jobs=jobs, interval=interval)
            w.stop()
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(
                f"SELECT extract(epoch FROM p.created - q.created) * 1000 FROM {log} q "
                f"JOIN {log} p ON p.job_id = q.job_id AND p.status = 'picked' "
                f"WHERE q.status = 'queued' ORDER BY q.job_id".encode()
            ).fetchall()
        emit_idle_latency(LIBRARY, jobs, seconds, interval, [float(r[0]) for r in rows][1:], listen=True)


def cmd_worker(dsn: str, schema: str, concurrency: int | None, burst: bool) -> None:
    from datetime import timedelta

    from pgqueuer.adapters.drivers.psycopg import PsycopgDriver
    from pgqueuer.adapters.persistence.queries import Queries
    from pgqueuer.core.qm import QueueManager
    from pgqueuer.domain.types import QueueExecutionMode

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    _use_schema(schema)

    async def run() -> None:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        qm = QueueManager(Queries(PsycopgDriver(conn)))

        async def noop(job: Any) -> None:
            return None

        qm.entrypoint(ENTRYPOINT)(noop)

        options: dict[str, Any] = {"dequeue_timeout": timedelta(seconds=30), "batch_size": 10}
        if concurrency is not None:
            # pgqueuer requires max_concurrent_tasks >= 2 * batch_size.
            options["batch_size"] = max(1, concurrency // 2)
            options["max_concurrent_tasks"] = concurrency
        mode = QueueExecutionMode.drain if burst else QueueExecutionMode.continuous
        loop = asyncio.get_running_loop()
        import signal

        loop.add_signal_handler(signal.SIGTERM, qm.shutdown.set)
        await qm.run(mode=mode, **options)

    asyncio.run(run())


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__ or LIBRARY).parse_args(argv)
    run_workload(args, args.database_url, enqueue=cmd_enqueue, bulk=cmd_bulk, drain=cmd_drain, latency=cmd_latency,
                 worker=lambda dsn, a: cmd_worker(dsn, a.schema, a.concurrency, a.burst))


if __name__ == "__main__":
    main()
