"""What server-side prepared statements buy pgtasks on a direct connection, and what deciding costs: one JSON line.

pgtasks prepares statements only on connections that reach PostgreSQL itself
(prepared_statements="auto", see pgtasks/storage/prepared.py and docs/pgbouncer.md), because they
break under transaction pooling. This measures, on a direct connection, the two statements that
matter, a single-job INSERT (.delay()) and the worker's claim + outcome round trip
(job_fetch_available with LIMIT 10, then job_set_outcome_many), each with prepare_threshold=None
(unprepared, as behind a pooler or with "off") and prepare_threshold=0 (psycopg prepares on first
use). The variants alternate within each repeat so a shared machine's noise hits both; medians of
the repeats are reported with the speedup of prepared over unprepared. It also times what "auto"
adds to each new connection: the check (SELECT pg_backend_pid(), compared with the cancel key),
against the connect itself.

    python benchmarks/prepared_statements.py [--database-url DSN] [--repeat 5] [--inserts 2000] [--jobs 2000]
        [--connections 200]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from typing import Any

import psycopg
from bench_common import base_parser
from psycopg import AsyncConnection

from pgtasks import App
from pgtasks.core.models import EnqueueRow, JobState, Outcome
from pgtasks.core.options import EnqueueOptions
from pgtasks.storage.bench import BenchStore
from pgtasks.storage.connections import connection_kwargs
from pgtasks.storage.prepared import PreparedStatements, Preparing


def _connect_kwargs(prepared: bool) -> dict[str, Any]:
    return {"autocommit": True, "prepare_threshold": 0 if prepared else None, "application_name": "pgtasks-bench"}


async def insert_rate(app: App, row: EnqueueRow, prepared: bool, n: int) -> float:
    """Single-row INSERTs per second on one connection."""
    async with await AsyncConnection.connect(app.dsn, **_connect_kwargs(prepared)) as conn:
        await app.store.ajob_insert(conn, row)  # warm up: connection caches, the first prepare
        started = time.perf_counter()
        for _ in range(n):
            await app.store.ajob_insert(conn, row)
        return n / (time.perf_counter() - started)


async def claim_complete_rate(app: App, row: EnqueueRow, prepared: bool, jobs: int) -> float:
    """Jobs per second through fetch (LIMIT 10) + outcome write, on one connection, no task code."""
    async with await AsyncConnection.connect(app.dsn, **_connect_kwargs(False)) as loader:
        await app.store.ajob_insert_many(loader, [row] * jobs)
    worker_id = f"bench-{uuid.uuid4().hex[:8]}"
    done = 0
    async with await AsyncConnection.connect(app.dsn, **_connect_kwargs(prepared)) as conn:
        started = time.perf_counter()
        while True:
            claimed = await app.store.ajob_fetch_available(conn, queues=["bench"], limit=10, worker_id=worker_id)
            if not claimed:
                break
            outcomes = [Outcome(job.id, job.claims, JobState.COMPLETED) for job in claimed]
            done += len(await app.store.ajob_set_outcome_many(conn, outcomes))
        elapsed = time.perf_counter() - started
    if done != jobs:
        raise RuntimeError(f"claimed and completed {done} of {jobs} jobs")
    return done / elapsed


async def interleaved(app: App, insert_row: EnqueueRow, row: EnqueueRow, blocks: int, block: int) -> dict[str, float]:
    """Both variants at once, on two open connections, in alternating blocks of `block` statements.

    A shared machine's load drifts within seconds; blocks this short put both variants under the
    same load, so their ratio holds where whole alternating runs scatter. Claims share one queue
    (each block claims 10 at a time and writes their outcomes)."""
    async with await AsyncConnection.connect(app.dsn, **_connect_kwargs(False)) as loader:
        await app.store.ajob_insert_many(loader, [row] * (blocks * block * 10 + 100))
    worker_id = f"bench-{uuid.uuid4().hex[:8]}"
    seconds = {"insert_prepared": 0.0, "insert_unprepared": 0.0, "claim_prepared": 0.0, "claim_unprepared": 0.0}
    claimed_jobs = {"prepared": 0, "unprepared": 0}
    async with await AsyncConnection.connect(app.dsn, **_connect_kwargs(True)) as prepared_conn, \
            await AsyncConnection.connect(app.dsn, **_connect_kwargs(False)) as plain_conn:
        conns = {"prepared": prepared_conn, "unprepared": plain_conn}
        for conn in conns.values():  # warm up: caches, the first prepare
            await app.store.ajob_insert(conn, insert_row)
            await app.store.ajob_fetch_available(conn, queues=["bench"], limit=1, worker_id=worker_id)
        for index in range(blocks):
            for name in (("prepared", "unprepared") if index % 2 == 0 else ("unprepared", "prepared")):
                conn = conns[name]
                started = time.perf_counter()
                for _ in range(block):
                    await app.store.ajob_insert(conn, insert_row)
                seconds[f"insert_{name}"] += time.perf_counter() - started
                started = time.perf_counter()
                for _ in range(block // 5):
                    claimed = await app.store.ajob_fetch_available(conn, queues=["bench"], limit=10,
                                                                   worker_id=worker_id)
                    outcomes = [Outcome(job.id, job.claims, JobState.COMPLETED) for job in claimed]
                    claimed_jobs[name] += len(await app.store.ajob_set_outcome_many(conn, outcomes))
                seconds[f"claim_{name}"] += time.perf_counter() - started
    inserts = blocks * block
    return {
        "interleaved_insert_per_s_prepared": round(inserts / seconds["insert_prepared"], 1),
        "interleaved_insert_per_s_unprepared": round(inserts / seconds["insert_unprepared"], 1),
        "interleaved_insert_speedup": round(seconds["insert_unprepared"] / seconds["insert_prepared"], 3),
        "interleaved_claim_complete_jobs_per_s_prepared":
            round(claimed_jobs["prepared"] / seconds["claim_prepared"], 1),
        "interleaved_claim_complete_jobs_per_s_unprepared":
            round(claimed_jobs["unprepared"] / seconds["claim_unprepared"], 1),
        "interleaved_claim_complete_speedup": round(
            (claimed_jobs["prepared"] / seconds["claim_prepared"])
            / (claimed_jobs["unprepared"] / seconds["claim_unprepared"]), 3),
    }


async def connect_check_ms(app: App, connections: int) -> tuple[float, float]:
    """Median milliseconds of a new connection's connect, and of the auto check that follows it."""
    preparing = Preparing(PreparedStatements.AUTO, app.schema)
    connects: list[float] = []
    checks: list[float] = []
    for _ in range(connections):
        started = time.perf_counter()
        conn = await AsyncConnection.connect(app.dsn, **connection_kwargs("pgtasks-bench"))
        connected = time.perf_counter()
        await preparing.aconfigure(conn)
        checks.append((time.perf_counter() - connected) * 1000)
        connects.append((connected - started) * 1000)
        if conn.prepare_threshold is None:
            raise RuntimeError("the benchmark's connection is not direct: auto left preparing off")
        await conn.close()
    return statistics.median(connects), statistics.median(checks)


async def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--inserts", type=int, default=2000, help="single-row inserts per measurement")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs claimed and completed per measurement")
    parser.add_argument("--connections", type=int, default=200, help="new connections timed for the auto check")
    parser.add_argument("--blocks", type=int, default=40, help="alternating blocks of the interleaved measurement")
    parser.add_argument("--block", type=int, default=50, help="single-row inserts per interleaved block")
    args = parser.parse_args()
    schema = f"pgtasks_bench_prep_{uuid.uuid4().hex[:8]}"
    app = App(args.database_url, schema=schema)
    app.migrate()

    @app.task(name="bench.noop", queue="bench")
    def noop(i: int) -> None: ...

    # Inserted rows go to a queue nobody claims, so the claim measurement sees only its own jobs.
    insert_row: EnqueueRow = noop.build_row((1,), {}, EnqueueOptions(queue="bench_inserted"))
    row: EnqueueRow = noop.build_row((1,), {}, EnqueueOptions())
    rates: dict[str, list[float]] = {k: [] for k in ("insert_unprepared", "insert_prepared",
                                                      "claim_unprepared", "claim_prepared")}
    try:
        for repeat in range(args.repeat):
            order = (False, True) if repeat % 2 == 0 else (True, False)
            for prepared in order:
                suffix = "prepared" if prepared else "unprepared"
                rates[f"insert_{suffix}"].append(await insert_rate(app, insert_row, prepared, args.inserts))
                rates[f"claim_{suffix}"].append(await claim_complete_rate(app, row, prepared, args.jobs))
        connect_ms, check_ms = await connect_check_ms(app, args.connections)
        both = await interleaved(app, insert_row, row, args.blocks, args.block)
    finally:
        with psycopg.connect(args.database_url, **_connect_kwargs(False)) as conn:
            BenchStore(app.schema).schema_drop(conn)
        app.close()
    medians = {k: round(statistics.median(v), 1) for k, v in rates.items()}
    print(json.dumps({
        "benchmark": "prepared_statements",
        "connection": "direct",
        "repeats": args.repeat,
        "inserts_per_measurement": args.inserts,
        "jobs_per_measurement": args.jobs,
        "insert_per_s_unprepared": medians["insert_unprepared"],
        "insert_per_s_prepared": medians["insert_prepared"],
        "insert_speedup": round(medians["insert_prepared"] / medians["insert_unprepared"], 3),
        "claim_complete_jobs_per_s_unprepared": medians["claim_unprepared"],
        "claim_complete_jobs_per_s_prepared": medians["claim_prepared"],
        "claim_complete_speedup": round(medians["claim_prepared"] / medians["claim_unprepared"], 3),
        **both,
        "new_connection_connect_ms": round(connect_ms, 3),
        "new_connection_auto_check_ms": round(check_ms, 3),
        "runs": {k: [round(x, 1) for x in v] for k, v in rates.items()},
    }))


if __name__ == "__main__":
    asyncio.run(main())
