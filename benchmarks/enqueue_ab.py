"""Enqueue with real arguments, A/B: pgtasks trees (before/after a change) against pgqueuer, alternating.

Each measurement is a fresh subprocess on a throwaway schema; rounds alternate the order of the
variants (A B pgqueuer, then pgqueuer B A, ...). Printed per workload: the median rate and the
median client CPU a job (user + system of the enqueuing process, what a change to the client
moves even when a busy database moves the rates), and the ratios of the medians.

- bulk: `delay_many([task.s(n=i) for i in ...])`, the signatures built in the timed window;
  pgqueuer `queries.enqueue(["noop"] * n, [payload_i ...], [0] * n)` with a payload a job.
- single: `task.delay(n=i)`, each its own transaction; pgqueuer `queries.enqueue("noop", payload)`.

    python benchmarks/enqueue_ab.py --tree A=/tmp/before --tree B=. --pgqueuer --workload bulk \\
        --jobs 20000 --chunk 1000 --rounds 5

A tree is a directory holding a `pgtasks` package (e.g. `git archive <commit> | tar -x -C DIR`);
pgqueuer runs with --peer-python (the venv benchmarks/compare.py makes).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PEERS = Path(__file__).resolve().parent / "peers"


def measure_pgtasks(dsn: str, workload: str, jobs: int, chunk: int) -> tuple[float, float]:
    from pgtasks.ops import bench

    with bench.throwaway_app(dsn) as app:
        @app.task(name="bench.noop_n")
        def noop_n(n: int) -> None:
            return None

        if workload == "bulk":
            noop_n.delay_many([noop_n.s(n=0)])  # opens the pool
            started, cpu = time.perf_counter(), time.process_time()
            for offset in range(0, jobs, chunk):
                noop_n.delay_many([noop_n.s(n=i) for i in range(offset, min(offset + chunk, jobs))])
        else:
            noop_n.delay(n=0)
            started, cpu = time.perf_counter(), time.process_time()
            for i in range(jobs):
                noop_n.delay(n=i)
        return time.perf_counter() - started, time.process_time() - cpu


def measure_pgqueuer(dsn: str, workload: str, jobs: int, chunk: int) -> tuple[float, float]:
    """pgqueuer's producer as benchmarks/compare.py runs it: its Queries on asyncpg, on uvloop."""
    sys.path.insert(0, str(PEERS))
    import pgqueuer_bench as pq
    from peer_common import throwaway_schema

    async def run() -> tuple[float, float]:
        queries, conn = await pq._queries(dsn, "asyncpg")
        try:
            if workload == "bulk":
                await queries.enqueue(["noop"], [b'{"n": 0}'], [0])
                started, cpu = time.perf_counter(), time.process_time()
                for offset in range(0, jobs, chunk):
                    n = min(chunk, jobs - offset)
                    await queries.enqueue(["noop"] * n, [b'{"n": %d}' % i for i in range(offset, offset + n)],
                                          [0] * n)
            else:
                await queries.enqueue("noop", b'{"n": 0}')
                started, cpu = time.perf_counter(), time.process_time()
                for i in range(jobs):
                    await queries.enqueue("noop", b'{"n": %d}' % i)
            return time.perf_counter() - started, time.process_time() - cpu
        finally:
            await conn.close()

    with throwaway_schema(dsn, "bench_pgq") as schema:
        pq._use_schema(schema)
        pq._install(dsn)
        result: tuple[float, float] = pq._run(run())
        return result


def child(argv: list[str]) -> None:
    library, dsn, workload, jobs, chunk = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    measure = measure_pgtasks if library == "pgtasks" else measure_pgqueuer
    seconds, cpu = measure(dsn, workload, jobs, chunk)
    print(json.dumps({"rate": jobs / seconds, "cpu_us": cpu / jobs * 1e6}))


def main(argv: list[str] | None = None) -> None:
    from bench_common import base_parser  # not in the child: the peers' venv has no pgtasks

    parser = base_parser(__doc__)
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                        help="a pgtasks variant: the directory that holds its pgtasks package (repeatable)")
    parser.add_argument("--pgqueuer", action="store_true", help="add pgqueuer as a variant")
    parser.add_argument("--peer-python", default="/tmp/pgtasks-peers-venv/bin/python")
    parser.add_argument("--workload", choices=("bulk", "single"), default="bulk")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=1000, help="jobs per delay_many() call (bulk)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    variants = [tuple(tree.split("=", 1)) for tree in args.tree] + ([("pgqueuer", "")] if args.pgqueuer else [])
    if len(variants) < 2:
        parser.error("give at least two variants (--tree NAME=DIR, --pgqueuer)")
    rates: dict[str, list[float]] = {name: [] for name, _ in variants}
    cpus: dict[str, list[float]] = {name: [] for name, _ in variants}
    for round_ in range(args.rounds):
        for name, tree in variants if round_ % 2 == 0 else variants[::-1]:
            library = "pgqueuer" if name == "pgqueuer" and not tree else "pgtasks"
            python = args.peer_python if library == "pgqueuer" else sys.executable
            env = dict(os.environ)
            if library == "pgtasks":
                env["PYTHONPATH"] = os.pathsep.join([str(Path(tree).resolve()), str(Path(__file__).parent)])
            done = subprocess.run([python, __file__, "--child", library, args.database_url, args.workload,
                                   str(args.jobs), str(args.chunk)], env=env, capture_output=True, text=True,
                                  check=False)
            if done.returncode != 0:
                sys.exit(f"{name} failed:\n{done.stderr}")
            line = json.loads(done.stdout.strip().splitlines()[-1])
            rates[name].append(line["rate"])
            cpus[name].append(line["cpu_us"])
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(json.dumps({
        "workload": args.workload, "jobs": args.jobs, "chunk": args.chunk, "rounds": args.rounds,
        **{name: {"rate": round(medians[name], 1), "runs": [round(r, 1) for r in rates[name]],
                  "client_cpu_us": round(statistics.median(cpus[name]), 2)} for name in rates},
        "ratios": {f"{a}/{b}": round(medians[a] / medians[b], 2) for a in medians for b in medians if a != b},
    }))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
