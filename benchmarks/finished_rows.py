"""What to do with finished rows, measured: update in place (pgtasks), delete, or move to an archive table.

For each strategy, pgbench runs the worker's two transactions (claim 100 rows with the pgtasks
fetch shape, then finish them by id) with N clients over a pgtasks jobs table of --rows queued
jobs, on a fresh schema. Reported per strategy: rows finished per second, the jobs table's heap
and index sizes and dead tuples right after the run, and the same after a plain VACUUM (space
reusable, not returned), plus the archive table's size for `move`.

- update: the finished row stays, state = 'completed' (history and results stay queryable; the
  cleaner deletes them after the retention period).
- delete: the finished row is deleted (no history, no results).
- move: the finished row is deleted and inserted into an archive table, in one statement.

With --finished N it measures what pgtasks does instead (update in place) at scale: a burst
`pgtasks worker` drains --jobs no-op jobs from a jobs table already holding N finished rows,
against the same drain on an empty table, in --rounds alternating rounds (empty then full, full
then empty the next round). The N rows are seeded once, --seed-chunk rows per INSERT ... SELECT
generate_series statement (each its own transaction), spread over the last 12 hours, then VACUUM
ANALYZEd as autovacuum would have (the test cluster runs with it off); the seed time, the VACUUM
time and the table's sizes are reported. After each full round its jobs are deleted and the table
VACUUMed (untimed), so every round starts from the N seeded rows. The workers run with --retention
completed=forever so the cleaner deletes nothing in either arm. The target: the full-table drain
within 20% of the empty-table one (ratio >= 0.8).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

import psycopg
from bench_common import base_parser
from pgbench_ceiling import CLAIM, find_pgbench, run_pgbench

from pgtasks.ops import bench

FINISH = {
    "update": "UPDATE {jobs} SET state = 'completed', finalized_at = now() "
              "WHERE id = ANY('{{:ids}}'::bigint[]) AND state = 'running';\n",
    "delete": "DELETE FROM {jobs} WHERE id = ANY('{{:ids}}'::bigint[]) AND state = 'running';\n",
    "move": "WITH gone AS (DELETE FROM {jobs} WHERE id = ANY('{{:ids}}'::bigint[]) AND state = 'running' "
            "RETURNING *) INSERT INTO {archive} SELECT * FROM gone;\n",
}


def sizes(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    row = conn.execute(
        b"SELECT pg_relation_size(c.oid), pg_indexes_size(c.oid), s.n_live_tup, s.n_dead_tup "
        b"FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid "
        b"WHERE c.relname = 'jobs' AND s.schemaname = %s", (schema,)).fetchone()
    assert row is not None
    archive = conn.execute(b"SELECT coalesce(pg_total_relation_size(to_regclass(%s)), 0)",
                           (f'"{schema}".jobs_archive',)).fetchone()
    return {"heap_mb": round(row[0] / 2**20, 1), "indexes_mb": round(row[1] / 2**20, 1),
            "live_tuples": row[2], "dead_tuples": row[3], "archive_mb": round((archive or [0])[0] / 2**20, 1)}


def measure(pgbench: str, dsn: str, strategy: str, rows: int, clients: int, batch: int) -> dict[str, Any]:
    with bench.throwaway_app(dsn) as app:
        jobs = f'"{app.schema}".jobs'
        archive = f'"{app.schema}".jobs_archive'
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"INSERT INTO {jobs} (task, queue, args) SELECT 'pgtasks.bench.noop', 'default', '{{}}' "
                         f"FROM generate_series(1, {rows})".encode())
            conn.execute(f"CREATE TABLE {archive} (LIKE {jobs})".encode())
            conn.execute(f"VACUUM ANALYZE {jobs}".encode())
            before = sizes(conn, app.schema)
        script = CLAIM.format(jobs=jobs, batch=batch) + FINISH[strategy].format(jobs=jobs, archive=archive)
        per_client = rows // (clients * batch)
        tps = run_pgbench(pgbench, dsn, script, clients=clients, transactions=per_client)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(b"SELECT pg_stat_force_next_flush()")
            after = sizes(conn, app.schema)
            conn.execute(f"VACUUM {jobs}".encode())
            vacuumed = sizes(conn, app.schema)
        return {"library": "pgbench", "workload": f"finished_rows_{strategy}", "clients": clients, "batch": batch,
                "rows": per_client * clients * batch, "rate": round(tps * batch, 1), "before": before,
                "after_run": after, "after_vacuum": vacuumed}


FINISHED_TASK = "pgtasks.bench.finished"
NO_CLEANER = ("--retention", "completed=forever")


def seed_finished(conn: psycopg.Connection[Any], jobs: str, rows: int, chunk: int) -> float:
    """Insert `rows` completed jobs, `chunk` per statement, finalized over the last 12 hours; returns seconds."""
    started = time.perf_counter()
    for offset in range(0, rows, chunk):
        end = min(rows, offset + chunk)
        conn.execute(
            f"""INSERT INTO {jobs} (task, queue, args, state, priority, attempt, max_attempts, claims,
                                   run_at, created_at, attempted_at, attempted_by, finalized_at)
                SELECT '{FINISHED_TASK}', 'default', '{{}}', 'completed', 0, 1, 20, 1,
                       t, t, t, 'seed', t + interval '2 ms'
                FROM (SELECT now() - interval '12 hours' + g * (interval '12 hours' / {rows}) AS t
                      FROM generate_series({offset + 1}, {end}) AS g) AS s""".encode())
        print(f"finished_rows: seeded {end:,} of {rows:,} rows in {time.perf_counter() - started:.0f} s",
              file=sys.stderr, flush=True)
    return time.perf_counter() - started


def table_sizes(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    row = conn.execute(
        b"SELECT pg_relation_size(c.oid), pg_indexes_size(c.oid), pg_total_relation_size(c.oid), "
        b"s.n_live_tup, s.n_dead_tup FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid "
        b"WHERE c.relname = 'jobs' AND s.schemaname = %s", (schema,)).fetchone()
    assert row is not None
    indexes = conn.execute(b"SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes "
                           b"WHERE schemaname = %s AND relname = 'jobs' ORDER BY 1", (schema,)).fetchall()
    mb = 2**20
    return {"heap_mb": round(row[0] / mb, 1), "indexes_mb": round(row[1] / mb, 1), "total_mb": round(row[2] / mb, 1),
            "live_tuples": row[3], "dead_tuples": row[4],
            "index_mb": {str(name): round(size / mb, 1) for name, size in indexes}}


def drain_with_finished(dsn: str, finished: int, jobs: int, rounds: int, chunk: int,
                        concurrency: int | None) -> None:
    """Empty table against `finished` finished rows, in alternating rounds; JSON lines, then the ratio."""
    rates: dict[str, list[float]] = {"empty": [], "full": []}
    with bench.throwaway_app(dsn) as full, psycopg.connect(dsn, autocommit=True) as conn:
        table = f'"{full.schema}".jobs'
        seed_seconds = seed_finished(conn, table, finished, chunk)
        started = time.perf_counter()
        conn.execute(f"VACUUM ANALYZE {table}".encode())
        vacuum_seconds = time.perf_counter() - started
        conn.execute(b"SELECT pg_stat_force_next_flush()")
        print(json.dumps({"library": "pgtasks", "workload": "finished_rows_seed", "finished": finished,
                          "chunk": chunk, "seed_seconds": round(seed_seconds, 1),
                          "seed_rows_per_s": round(finished / max(seed_seconds, 1e-6)),
                          "vacuum_analyze_seconds": round(vacuum_seconds, 1),
                          **table_sizes(conn, full.schema)}), flush=True)

        def empty_round() -> bench.Result:
            with bench.throwaway_app(dsn) as app:
                return bench.drain(app, jobs, concurrency=concurrency, extra_args=NO_CLEANER,
                                   workload="drain_empty_table")

        def full_round() -> bench.Result:
            result = bench.drain(full, jobs, concurrency=concurrency, extra_args=NO_CLEANER,
                                 workload="drain_finished_rows")
            # Back to the N seeded rows (drain() counts every no-op job in the table), and vacuumed
            # as autovacuum would have by the next round: untimed.
            conn.execute(f"DELETE FROM {table} WHERE task = %s".encode(), (bench.NOOP_TASK,))
            conn.execute(f"VACUUM {table}".encode())
            return result

        for round_no in range(rounds):
            order = (("empty", empty_round), ("full", full_round))
            for arm, measure_arm in order if round_no % 2 == 0 else order[::-1]:
                result = measure_arm()
                rates[arm].append(result.rate)
                print(json.dumps({**result.as_dict(), "finished": finished if arm == "full" else 0,
                                  "round": round_no}), flush=True)
        conn.execute(b"SELECT pg_stat_force_next_flush()")
        after = table_sizes(conn, full.schema)
    empty, loaded = statistics.median(rates["empty"]), statistics.median(rates["full"])
    ratio = loaded / empty
    print(json.dumps({"library": "pgtasks", "workload": "finished_rows_ratio", "finished": finished, "jobs": jobs,
                      "rounds": rounds, "empty_rate_median": round(empty, 1), "full_rate_median": round(loaded, 1),
                      "ratios_by_round": [round(f / e, 3) for e, f in zip(rates["empty"], rates["full"], strict=True)],
                      "ratio": round(ratio, 3), "within_20pct": ratio >= 0.8, "full_table_after": after}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--finished", type=int, default=None,
                        help="measure the pgtasks drain with this many finished rows in the table, against an "
                             "empty table, instead of the pgbench strategies")
    parser.add_argument("--jobs", type=int, default=50_000, help="with --finished: jobs drained per round")
    parser.add_argument("--rounds", type=int, default=3, help="with --finished: alternating rounds")
    parser.add_argument("--seed-chunk", type=int, default=1_000_000, help="with --finished: rows per INSERT")
    parser.add_argument("--concurrency", type=int, default=None, help="with --finished: worker concurrency")
    parser.add_argument("--pgbench", default=None)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--strategies", default="update,delete,move")
    args = parser.parse_args(argv)
    if args.finished is not None:
        drain_with_finished(args.database_url, args.finished, args.jobs, args.rounds, args.seed_chunk,
                            args.concurrency)
        return
    pgbench = find_pgbench(args.pgbench)
    for _ in range(max(1, args.repeat)):
        for strategy in args.strategies.split(","):
            print(json.dumps(measure(pgbench, args.database_url, strategy, args.rows, args.clients, args.batch)),
                  flush=True)


if __name__ == "__main__":
    main()
