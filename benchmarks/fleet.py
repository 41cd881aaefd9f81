"""Many workers, one database: N `pgtasks worker --burst` processes drain M jobs spread over queues and priorities.

The jobs are queued first, interleaved (job i goes to queue i % Q with priority (i // Q) % P, so
every queue holds every priority in id order), and every worker serves every queue. The workers
start behind a gate: this script holds `LOCK TABLE jobs IN EXCLUSIVE MODE` (reads pass, the claim's
UPDATE waits) until every worker has logged `worker.started`, so all of them begin claiming in the
same instant instead of the first one up draining a head start while the others import.

Everything is read from the jobs table afterwards (one clock, the database's):

- rate: completed jobs / (last outcome - first claim).
- reclaims: the sum of (claims - 1) over all jobs. Every claim bumps `claims`; a job is claimed
  again only after it was given back (the workers log `worker.unstarted_returned count=N` for the
  claimed-ahead jobs they return after a stall), so `unexplained_reclaims` = reclaims - given back
  must be 0: anything else is a job claimed twice. `attempt_gt_1` counts jobs that ran twice.
- fetches: claims that returned rows, as distinct (attempted_by, attempted_at) pairs; fetch
  statements, from idx_scan of the partial fetch index (each claim runs one LATERAL scan of it
  per queue: idx_scan / queues); `empty_fetches_est` is the difference. Each worker ends with at
  least one empty fetch (that is how a burst worker learns it is done), so expect about N of them.
- share: completed jobs per worker (attempted_by), min and max against the fair M / N.
- queues: when each queue's jobs finished, seconds after the first claim (p50 / p95 / max); with
  the interleaved fill they should match.
- priorities: the mean completion order of each priority (0 = first job finished, 1 = last) and
  its finish times: the claim orders by priority DESC, so the highest priority should finish first.

Prints one JSON line per run, then a Markdown table per run (workers, queues, priorities).
"""

from __future__ import annotations

import itertools
import json
import shlex
import statistics
import time
from typing import Any

import msgspec
import psycopg
from bench_common import base_parser, markdown_table

from pgtasks import App
from pgtasks.core.errors import BenchmarkError
from pgtasks.ops import bench


def fill_spread(app: App, jobs: int, queues: list[str], priorities: list[int], chunk: int) -> None:
    """Queue `jobs` no-op jobs, job i in queues[i % Q] at priorities[(i // Q) % P]."""
    task = bench.noop_task(app)
    shapes = [task.configure(queue=q, priority=p) for p in priorities for q in queues]
    nq, n_shapes = len(queues), len(shapes)
    for offset in range(0, jobs, chunk):
        calls = []
        for i in range(offset, min(jobs, offset + chunk)):
            q, p = i % nq, (i // nq) % len(priorities)
            calls.append(shapes[(p * nq + q) % n_shapes].s())
        task.delay_many(calls)


def fetch_index_scans(conn: psycopg.Connection[Any], schema: str) -> int:
    conn.execute(b"SELECT pg_stat_clear_snapshot()")
    row = conn.execute(b"SELECT idx_scan FROM pg_stat_user_indexes WHERE schemaname = %s "
                       b"AND indexrelname = 'jobs_fetch_idx'", (schema,)).fetchone()
    if row is None:
        raise BenchmarkError(f"no jobs_fetch_idx in schema {schema}")
    return int(row[0])


def log_events(worker: bench.WorkerProcess) -> list[dict[str, Any]]:
    """The worker's JSON log lines (--log-format json), parsed; other lines (none expected) skipped."""
    events = []
    for line in worker.log_tail(10**9).splitlines():
        if line.startswith("{"):
            events.append(msgspec.json.decode(line))
    return events


def wait_started(workers: list[bench.WorkerProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(workers)
    while pending:
        for w in list(pending):
            if not w.alive():
                raise BenchmarkError(f"worker {w.pid} exited before it started; its log ends:\n{w.log_tail()}")
            if '"worker.started"' in w.log_tail(10**9):
                pending.remove(w)
        if pending and time.monotonic() > deadline:
            raise BenchmarkError(f"{len(pending)} workers did not start within {timeout}s; one log ends:\n"
                                 f"{pending[0].log_tail()}")
        time.sleep(0.05)


def run(dsn: str, n_workers: int, jobs: int, n_queues: int, n_priorities: int, *, concurrency: int | None,
        chunk: int, extra_args: list[str], timeout: float) -> dict[str, Any]:
    queues = [f"q{i}" for i in range(n_queues)]
    priorities = list(range(n_priorities - 1, -1, -1))  # highest first: the fill's order within a cycle
    with bench.throwaway_app(dsn) as app:
        fill_started = time.perf_counter()
        fill_spread(app, jobs, queues, priorities, chunk)
        fill_seconds = time.perf_counter() - fill_started
        jobs_table = f'"{app.schema}".jobs'
        args = ["--queues", ",".join(queues), "--log-format", "json", *extra_args]
        workers = [bench.WorkerProcess(app, burst=True, concurrency=concurrency, extra_args=args)
                   for _ in range(n_workers)]
        with psycopg.connect(dsn, autocommit=True) as gate:
            gate.execute(f"VACUUM ANALYZE {jobs_table}".encode())  # as autovacuum would have, after a fill
            scans_before = fetch_index_scans(gate, app.schema)
            try:
                with gate.transaction():
                    gate.execute(f"LOCK TABLE {jobs_table} IN EXCLUSIVE MODE".encode())
                    for w in workers:
                        w.start()
                    wait_started(workers, timeout=120.0)
                walls = [w.wait(timeout) for w in workers]
                # Read now: a WorkerProcess's log is a temp file that goes with its __exit__.
                given_back = sum(int(e.get("count", 0)) for w in workers for e in log_events(w)
                                 if e.get("event") == "worker.unstarted_returned")
            finally:
                for w in workers:
                    w.__exit__(None, None, None)
            scans_after = fetch_index_scans(gate, app.schema)
            summary = gate.execute(
                f"""SELECT count(*) FILTER (WHERE state = 'completed'), count(*), min(attempted_at), max(finalized_at),
                           count(DISTINCT (attempted_by, attempted_at)), coalesce(sum(claims - 1), 0),
                           count(*) FILTER (WHERE claims > 1), count(*) FILTER (WHERE attempt > 1)
                    FROM {jobs_table}""".encode()).fetchone()
            assert summary is not None
            done, total, first, last, fetches, reclaims, reclaimed_jobs, attempt_gt_1 = summary
            if done != jobs or first is None or last is None:
                raise BenchmarkError(f"fleet: {done} of {jobs} jobs completed ({total} in the table)")
            per_worker = gate.execute(
                f"""SELECT attempted_by, count(*), count(DISTINCT attempted_at) FROM {jobs_table}
                    GROUP BY attempted_by ORDER BY attempted_by""".encode()).fetchall()
            per_queue = gate.execute(
                f"""SELECT queue, percentile_cont(ARRAY[0.5, 0.95, 1.0]) WITHIN GROUP (ORDER BY s), count(*)
                    FROM (SELECT queue, extract(epoch FROM finalized_at - %s) AS s FROM {jobs_table}) AS t
                    GROUP BY queue ORDER BY queue""".encode(), (first,)).fetchall()
            per_priority = gate.execute(
                f"""SELECT priority, avg(o)::float8, percentile_cont(ARRAY[0.5, 0.95, 1.0]) WITHIN GROUP (ORDER BY s),
                           count(*)
                    FROM (SELECT priority, extract(epoch FROM finalized_at - %s) AS s,
                                 (row_number() OVER (ORDER BY finalized_at, id) - 1)::float8
                                     / greatest(count(*) OVER () - 1, 1) AS o
                          FROM {jobs_table}) AS t
                    GROUP BY priority ORDER BY priority DESC""".encode(), (first,)).fetchall()
    seconds = max((last - first).total_seconds(), 1e-6)
    shares = [int(r[1]) for r in per_worker]
    fetch_statements = (scans_after - scans_before) / n_queues
    result: dict[str, Any] = {
        "library": "pgtasks", "workload": "fleet", "workers": n_workers, "jobs": jobs, "queues": n_queues,
        "priorities": n_priorities, "concurrency": concurrency if concurrency is not None else "default",
        "seconds": round(seconds, 3), "rate": round(jobs / seconds, 1), "fill_seconds": round(fill_seconds, 2),
        "worker_wall_s_max": round(max(walls), 2),
        "reclaims": int(reclaims), "reclaimed_jobs": int(reclaimed_jobs), "given_back_logged": given_back,
        "unexplained_reclaims": int(reclaims) - given_back, "attempt_gt_1": int(attempt_gt_1),
        "fetches_with_rows": int(fetches), "fetch_statements_est": round(fetch_statements),
        "empty_fetches_est": round(fetch_statements - int(fetches)),
        "jobs_per_fetch": round(jobs / max(int(fetches), 1), 1),
        "share_min": min(shares), "share_max": max(shares), "share_fair": round(jobs / n_workers),
        "share_workers_seen": len(shares),
        "per_worker": [{"worker": str(r[0]), "jobs": int(r[1]), "fetches": int(r[2])} for r in per_worker],
        "per_queue": [{"queue": r[0], "jobs": int(r[2]), "p50_s": round(r[1][0], 3), "p95_s": round(r[1][1], 3),
                       "max_s": round(r[1][2], 3)} for r in per_queue],
        "per_priority": [{"priority": int(r[0]), "jobs": int(r[3]), "mean_order": round(r[1], 3),
                          "p50_s": round(r[2][0], 3), "p95_s": round(r[2][1], 3), "max_s": round(r[2][2], 3)}
                         for r in per_priority],
    }
    orders = [p["mean_order"] for p in result["per_priority"]]
    result["priority_order_held"] = all(a < b for a, b in itertools.pairwise(orders))
    p50s = [q["p50_s"] for q in result["per_queue"]]
    result["queue_p50_spread"] = round((max(p50s) - min(p50s)) / max(statistics.median(p50s), 1e-6), 3)
    return result


def tables(result: dict[str, Any]) -> str:
    head = [{"workers": result["workers"], "jobs": result["jobs"], "jobs/s": f"{result['rate']:,.0f}",
             "seconds": result["seconds"], "reclaims": result["reclaims"],
             "unexplained": result["unexplained_reclaims"], "attempt>1": result["attempt_gt_1"],
             "fetches": result["fetches_with_rows"], "empty (est)": result["empty_fetches_est"],
             "share min/max (fair)": f"{result['share_min']}/{result['share_max']} ({result['share_fair']})"}]
    return "\n\n".join([
        markdown_table(head, list(head[0])),
        markdown_table(result["per_queue"], ["queue", "jobs", "p50_s", "p95_s", "max_s"]),
        markdown_table(result["per_priority"], ["priority", "jobs", "mean_order", "p50_s", "p95_s", "max_s"]),
    ])


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--workers", default="8", help="comma-separated worker counts, one run each (e.g. 1,8)")
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--queues", type=int, default=4)
    parser.add_argument("--priorities", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=None, help="per worker (default: the worker's default)")
    parser.add_argument("--chunk", type=int, default=5000, help="jobs per delay_many() while filling")
    parser.add_argument("--worker-args", default="", help="extra `pgtasks worker` arguments, shell-quoted")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds each worker may take")
    parser.add_argument("--markdown", action="store_true", help="also print the Markdown tables")
    args = parser.parse_args(argv)
    counts = [int(v) for v in args.workers.split(",")]
    for round_no in range(max(1, args.repeat)):
        # Alternate the order of the configurations from one round to the next.
        for n in counts if round_no % 2 == 0 else counts[::-1]:
            result = run(args.database_url, n, args.jobs, args.queues, args.priorities,
                         concurrency=args.concurrency, chunk=args.chunk,
                         extra_args=shlex.split(args.worker_args), timeout=args.timeout)
            print(json.dumps({**result, "round": round_no}), flush=True)
            if args.markdown:
                print(tables(result) + "\n", flush=True)


if __name__ == "__main__":
    main()
