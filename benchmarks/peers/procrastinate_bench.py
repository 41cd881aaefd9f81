"""procrastinate on the pgtasks benchmark workloads (run with the peers venv's python; see benchmarks/compare.py).

Same measurements as pgtasks.ops.bench: enqueue timed on the client through procrastinate's sync
connector (like pgtasks' sync .delay()); drain and start latency from procrastinate_events
('deferred', 'started' and 'succeeded' rows, stamped with now() of their transactions).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    with_search_path,
)

LIBRARY = "procrastinate"
# Its warning about apps defined in __main__ concerns task naming across processes; both sides here
# name the task explicitly.
logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)


def _app(dsn: str, *, sync: bool) -> Any:
    import procrastinate

    connector: Any = (procrastinate.SyncPsycopgConnector(conninfo=dsn) if sync
                      else procrastinate.PsycopgConnector(conninfo=dsn))
    app = procrastinate.App(connector=connector)

    async def noop() -> None:
        return None

    app.task(name="noop", queue="default")(noop)

    return app


@contextmanager
def _installed_schema(dsn: str) -> Iterator[tuple[str, str]]:
    """A throwaway schema with procrastinate's tables; yields (schema, a DSN whose search_path is it)."""
    with throwaway_schema(dsn, "bench_pcr") as schema:
        sdsn = with_search_path(dsn, schema)
        app = _app(sdsn, sync=True)
        with app.open():
            app.schema_manager.apply_schema()
        yield schema, sdsn


def _fill(app: Any, jobs: int, chunk: int = 5000) -> None:
    task = app.tasks["noop"]
    for offset in range(0, jobs, chunk):
        task.batch_defer(*([{}] * min(chunk, jobs - offset)))


def _worker_args(schema: str, concurrency: int | None, burst: bool) -> list[str]:
    args = ["--schema", schema]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    if burst:
        args.append("--burst")
    return args


def cmd_enqueue(dsn: str, jobs: int) -> None:
    with _installed_schema(dsn) as (_schema, sdsn):
        app = _app(sdsn, sync=True)
        with app.open():
            task = app.tasks["noop"]
            task.defer()
            started = time.perf_counter()
            for _ in range(jobs):
                task.defer()
            seconds = time.perf_counter() - started
        emit(LIBRARY, "enqueue", jobs, seconds)


def cmd_bulk(dsn: str, jobs: int, chunk: int) -> None:
    with _installed_schema(dsn) as (_schema, sdsn):
        app = _app(sdsn, sync=True)
        with app.open():
            task = app.tasks["noop"]
            task.batch_defer({})
            started = time.perf_counter()
            for offset in range(0, jobs, chunk):
                task.batch_defer(*([{}] * min(chunk, jobs - offset)))
            seconds = time.perf_counter() - started
        emit(LIBRARY, "bulk_enqueue", jobs, seconds, chunk=chunk)


def cmd_drain(dsn: str, jobs: int, concurrency: int | None) -> None:
    with _installed_schema(dsn) as (schema, sdsn):
        app = _app(sdsn, sync=True)
        with app.open():
            _fill(app, jobs)
        with WorkerProcess(__file__, dsn, _worker_args(schema, concurrency, True)) as w:
            wall = w.wait(3600)
        events = f'"{schema}".procrastinate_events'
        done = scalar(dsn, f"SELECT count(*) FROM {events} WHERE type = 'succeeded'")
        if done != jobs:
            raise RuntimeError(f"procrastinate drain: {done} of {jobs} completed")
        seconds = scalar(dsn, f"SELECT extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')"
                              f" - min(at) FILTER (WHERE type = 'started')) FROM {events}")
        emit(LIBRARY, "drain", jobs, float(seconds), concurrency=concurrency or "default",
             wall_seconds=round(wall, 3))


def cmd_latency(dsn: str, jobs: int, interval: float) -> None:
    with _installed_schema(dsn) as (schema, sdsn):
        events = f'"{schema}".procrastinate_events'

        def done() -> int:
            return int(scalar(dsn, f"SELECT count(*) FROM {events} WHERE type = 'succeeded'"))

        app = _app(sdsn, sync=True)
        with WorkerProcess(__file__, dsn, _worker_args(schema, None, False)) as w, app.open():
            seconds = paced_run(w, app.tasks["noop"].defer, done, jobs=jobs, interval=interval)
            w.stop()
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(
                f"SELECT extract(epoch FROM s.at - d.at) * 1000 FROM {events} d "
                f"JOIN {events} s ON s.job_id = d.job_id AND s.type = 'started' "
                f"WHERE d.type = 'deferred' ORDER BY d.job_id".encode()
            ).fetchall()
        emit_idle_latency(LIBRARY, jobs, seconds, interval, [float(r[0]) for r in rows][1:], listen=True)


def cmd_worker(dsn: str, schema: str, concurrency: int | None, burst: bool) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    app = _app(with_search_path(dsn, schema), sync=False)
    options: dict[str, Any] = {"wait": not burst}
    if concurrency is not None:
        options["concurrency"] = concurrency

    async def run() -> None:
        async with app.open_async():
            await app.run_worker_async(**options)

    asyncio.run(run())


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__ or LIBRARY).parse_args(argv)
    run_workload(args, args.database_url, enqueue=cmd_enqueue, bulk=cmd_bulk, drain=cmd_drain, latency=cmd_latency,
                 worker=lambda dsn, a: cmd_worker(dsn, a.schema, a.concurrency, a.burst))


if __name__ == "__main__":
    main()
