"""The database's own ceiling, measured with pgbench on a pgtasks jobs table (same columns, indexes, trigger).

- insert: single-client one-row INSERT per transaction into the jobs table (and into a bare
  two-column table, for reference): the ceiling for enqueueing one job per transaction.
- claim_complete: N clients, each transaction pair claims 100 rows (the pgtasks fetch shape: a
  SKIP LOCKED CTE feeding an UPDATE to 'running') and then marks them completed by id, as a worker
  must (the job runs between the two commits). Rate = rows claimed and completed per second.

Prints one JSON line per measurement. pgbench runs with the simple protocol (-M simple), like
pgtasks' unprepared statements; pass --pgbench to pick the binary.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from bench_common import base_parser

from pgtasks.ops import bench

_TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")



# One pgbench transaction claiming a batch exactly as job_fetch_available does; `ids` is set for the next step.
CLAIM = """WITH claimable AS (
    SELECT id FROM {jobs}
    WHERE state IN ('available', 'scheduled', 'retryable') AND queue = 'default' AND run_at <= now()
    ORDER BY queue, priority DESC, run_at, id LIMIT {batch} FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE {jobs} AS j SET state = 'running', attempt = j.attempt + 1, claims = j.claims + 1,
        attempted_at = now(), attempted_by = 'pgbench'
    FROM claimable WHERE j.id = claimable.id RETURNING j.id
)
SELECT coalesce(string_agg(id::text, ','), '') AS ids FROM claimed
\\gset
"""

def find_pgbench(explicit: str | None) -> str:
    for candidate in (explicit, shutil.which("pgbench"), "/usr/lib/postgresql/15/bin/pgbench"):
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit("pgbench not found: install postgresql-client or pass --pgbench PATH")


def run_pgbench(pgbench: str, dsn: str, script: str, *, clients: int, seconds: int | None = None,
                transactions: int | None = None) -> float:
    """Run one pgbench script; returns its transactions per second."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as f:
        f.write(script)
        f.flush()
        limit = ["-T", str(seconds)] if seconds is not None else ["-t", str(transactions)]
        out = subprocess.run([pgbench, "-n", "-M", "simple", "-c", str(clients), "-j", str(min(clients, 4)),
                              *limit, "-f", f.name, dsn], capture_output=True, text=True, check=False)
    match = _TPS.search(out.stdout)
    if out.returncode != 0 or match is None:
        raise SystemExit(f"pgbench failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return float(match.group(1))


def emit(**fields: Any) -> None:
    print(json.dumps({"library": "pgbench", **fields}), flush=True)


def insert_ceiling(pgbench: str, dsn: str, seconds: int) -> None:
    with bench.throwaway_app(dsn) as app:
        jobs = f'"{app.schema}".jobs'
        script = f"INSERT INTO {jobs} (task, queue, args) VALUES ('pgtasks.bench.noop', 'default', '{{}}');\n"
        tps = run_pgbench(pgbench, dsn, script, clients=1, seconds=seconds)
        emit(workload="insert_jobs_table", clients=1, seconds=seconds, rate=round(tps, 1))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE TABLE "{app.schema}".bare (id bigserial PRIMARY KEY, payload jsonb)'.encode())
        script = f"INSERT INTO \"{app.schema}\".bare (payload) VALUES ('{{}}');\n"
        tps = run_pgbench(pgbench, dsn, script, clients=1, seconds=seconds)
        emit(workload="insert_bare_table", clients=1, seconds=seconds, rate=round(tps, 1))


def claim_complete_ceiling(pgbench: str, dsn: str, clients: int, rows: int, batch: int) -> None:
    with bench.throwaway_app(dsn) as app:
        jobs = f'"{app.schema}".jobs'
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"INSERT INTO {jobs} (task, queue, args) SELECT 'pgtasks.bench.noop', 'default', '{{}}' "
                         f"FROM generate_series(1, {rows})".encode())
            conn.execute(f"VACUUM ANALYZE {jobs}".encode())
        complete = (f"UPDATE {jobs} SET state = 'completed', finalized_at = now() "
                    "WHERE id = ANY('{:ids}'::bigint[]) AND state = 'running';\n")
        script = CLAIM.format(jobs=jobs, batch=batch) + complete
        per_client = rows // (clients * batch)
        tps = run_pgbench(pgbench, dsn, script, clients=clients, transactions=per_client)
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(f"SELECT count(*) FROM {jobs} WHERE state = 'completed'".encode()).fetchone()
        done = int(row[0]) if row else 0
        expected = per_client * clients * batch
        if done != expected:
            raise SystemExit(f"claim_complete: {done} rows completed, expected {expected}")
        emit(workload="claim_complete", clients=clients, batch=batch, rows=done, rate=round(tps * batch, 1))


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--pgbench", default=None, help="the pgbench binary")
    parser.add_argument("--seconds", type=int, default=10, help="duration of each insert run")
    parser.add_argument("--clients", default="4,8", help="comma-separated client counts for claim_complete")
    parser.add_argument("--rows", type=int, default=200_000, help="rows queued for each claim_complete run")
    parser.add_argument("--batch", type=int, default=100, help="rows claimed per transaction")
    parser.add_argument("--only", choices=("insert", "claim_complete"), default=None)
    args = parser.parse_args(argv)
    pgbench = find_pgbench(args.pgbench)
    for _ in range(max(1, args.repeat)):
        if args.only in (None, "insert"):
            insert_ceiling(pgbench, args.database_url, args.seconds)
        if args.only in (None, "claim_complete"):
            for clients in (int(c) for c in args.clients.split(",")):
                claim_complete_ceiling(pgbench, args.database_url, clients, args.rows, args.batch)


if __name__ == "__main__":
    main()
