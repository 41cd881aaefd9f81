"""Drain with history (e): the drain of N jobs with 1,000,000 finished rows already in the table, against
the same drain on an empty table; and (--explain) EXPLAIN ANALYZE of the fetch query at that size.

The finished rows are inserted with one generate_series statement (benchmark setup, not library
code) and the table is then VACUUM ANALYZEd, as autovacuum would have done by the time a history
that size had accumulated. Prints one JSON line per drain, then one with the ratio.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from bench_common import base_parser, emit, repeated

from pgtasks import App
from pgtasks.ops import bench

HISTORY_TASK = "pgtasks.bench.history"


def add_history(app: App, rows: int) -> None:
    """Insert `rows` completed jobs spread over the last day, then VACUUM ANALYZE."""
    jobs = f'"{app.schema}".jobs'
    with psycopg.connect(app.dsn, autocommit=True) as conn:
        conn.execute(
            f"""INSERT INTO {jobs} (task, queue, args, state, priority, attempt, max_attempts, claims,
                                   run_at, created_at, attempted_at, attempted_by, finalized_at)
                SELECT '{HISTORY_TASK}', 'default', '{{}}', 'completed', 0, 1, 20, 1,
                       t, t, t, 'history', t + interval '2 ms'
                FROM (SELECT now() - interval '1 day' + g * (interval '1 day' / {rows}) AS t
                      FROM generate_series(1, {rows}) AS g) AS s""".encode())
        conn.execute(f"VACUUM ANALYZE {jobs}".encode())


def explain_fetch(app: App, limit: int) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the worker's fetch query, rolled back so no job is claimed."""
    query = app.store.queries["job_fetch_available"]
    params: dict[str, Any] = {"queues": ["default"], "limit": limit, "worker_id": "explain", "now": None}
    with psycopg.connect(app.dsn, autocommit=True) as conn, conn.transaction(force_rollback=True):
        rows = conn.execute(b"EXPLAIN (ANALYZE, BUFFERS) " + query.encode(), params).fetchall()
    return "\n".join(str(r[0]) for r in rows)


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--history", type=int, default=1_000_000, help="finished rows already in the table")
    parser.add_argument("--jobs", type=int, default=50_000, help="jobs to drain")
    parser.add_argument("--concurrency", type=int, default=None, help="worker concurrency (default: its default)")
    parser.add_argument("--explain", action="store_true",
                        help="print EXPLAIN ANALYZE of the fetch query with the history and the queue in place")
    parser.add_argument("--explain-limit", type=int, default=10, help="the fetch LIMIT to explain")
    args = parser.parse_args(argv)
    dsn = args.database_url

    def empty() -> bench.Result:
        with bench.throwaway_app(dsn) as app:
            return bench.drain(app, args.jobs, concurrency=args.concurrency, workload="drain_empty_table")

    def history() -> bench.Result:
        with bench.throwaway_app(dsn) as app:
            add_history(app, args.history)
            if args.explain:
                bench.fill(app, args.jobs)
                print(json.dumps({"library": "pgtasks", "workload": "explain_fetch", "history": args.history,
                                  "queued": args.jobs, "plan": explain_fetch(app, args.explain_limit)}), flush=True)
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f'DELETE FROM "{app.schema}".jobs WHERE task = %s'.encode(), (bench.NOOP_TASK,))
            result = bench.drain(app, args.jobs, concurrency=args.concurrency, workload="drain_with_history")
            return bench.Result(result.workload, result.jobs, result.seconds, result.rate,
                                details={**result.details, "history": args.history})

    base = repeated(args.repeat, empty)
    emit(base)
    loaded = repeated(args.repeat, history)
    emit(loaded)
    print(json.dumps({"library": "pgtasks", "workload": "history_ratio", "history": args.history,
                      "ratio": round(loaded.rate / base.rate, 3)}), flush=True)


if __name__ == "__main__":
    main()
