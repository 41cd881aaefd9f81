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
"""

from __future__ import annotations

import json
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


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--pgbench", default=None)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--strategies", default="update,delete,move")
    args = parser.parse_args(argv)
    pgbench = find_pgbench(args.pgbench)
    for _ in range(max(1, args.repeat)):
        for strategy in args.strategies.split(","):
            print(json.dumps(measure(pgbench, args.database_url, strategy, args.rows, args.clients, args.batch)),
                  flush=True)


if __name__ == "__main__":
    main()
